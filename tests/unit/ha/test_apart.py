"""``ha/apart.choose``: when and to whom the leading master hands etcd's raft leadership."""

from swarmlet.ha.apart import choose


def test_only_a_raft_leader_on_our_own_member_is_moved_and_to_the_same_member_everywhere():
    assert choose("b", "b", ["c", "a", "b"], 3) == "a"
    assert choose("b", "a", ["a", "b", "c"], 3) is None       # etcd's leader is elsewhere already
    assert choose(None, "a", ["a"], 1) is None                  # our member is not known
    assert choose("b", "b", ["b"], 1) is None                   # nobody else to take it


def test_nothing_moves_while_a_member_is_down():
    """Two of three answer: losing either loses the quorum anyway, so a move buys nothing."""
    assert choose("b", "b", ["a", "b"], 3) is None
    assert choose("b", "b", ["a", "b", "c", "d"], 5) is None
    assert choose("b", "b", ["a", "b", "c", "d", "e"], 5) == "a"
