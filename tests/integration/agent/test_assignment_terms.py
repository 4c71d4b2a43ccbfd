"""Agents order assignments by (leader term, version): an older term is refused whatever its
version, a newer term is taken whatever its version (issue 15: a deposed leader moves nothing)."""

from __future__ import annotations

import pytest

from swarmlet_agent.state import AssignmentStore
from swarmlet.shipped.exceptions import StaleAssignment
from swarmlet.shipped.models import Assignment

pytestmark = pytest.mark.integration


def test_terms_order_assignments_and_survive_a_restart(tmp_path):
    st = AssignmentStore(str(tmp_path))
    st.load()
    assert st.offer(Assignment("n1", 10, term=0))          # a single master
    assert st.offer(Assignment("n1", 3, term=7))           # HA leader of term 7: lower version, taken
    with pytest.raises(StaleAssignment) as exc:
        st.offer(Assignment("n1", 99, term=5))             # a deposed leader, however new its version
    assert exc.value.term == 7 and "stale term 5" in str(exc.value)
    with pytest.raises(StaleAssignment):
        st.offer(Assignment("n1", 2, term=7))              # within a term, versions move forward
    assert not st.offer(Assignment("n1", 3, term=7))       # the same again: idempotent
    assert set(st.offers) == {0, 5, 7} and st.offers[7]["count"] == 3
    again = AssignmentStore(str(tmp_path))                 # the agent restarted
    assert again.load() == Assignment("n1", 3, term=7)
    with pytest.raises(StaleAssignment):
        again.offer(Assignment("n1", 50, term=6))
