"""``${VAR}`` interpolation follows Compose's rules (compose-go ``template``)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from swarmlet.shipped.exceptions import StackFileError
from swarmlet.stack.interpolate import interpolate

pytestmark = pytest.mark.unit

ENV = {"SET": "v", "EMPTY": ""}


def run(text, env=ENV):
    warnings = []
    return interpolate(text, env, "f:1:1", warnings.append), warnings


@pytest.mark.parametrize("text, expected", [
    ("$SET", "v"), ("${SET}", "v"), ("a${SET}b$SET.c", "avbv.c"), ("$$SET", "$SET"), ("$${SET}", "${SET}"),
    ("${SET:-d}", "v"), ("${EMPTY:-d}", "d"), ("${UNSET:-d}", "d"),
    ("${SET-d}", "v"), ("${EMPTY-d}", ""), ("${UNSET-d}", "d"),
    ("${SET:+alt}", "alt"), ("${EMPTY:+alt}", ""), ("${UNSET:+alt}", ""),
    ("${SET+alt}", "alt"), ("${EMPTY+alt}", "alt"), ("${UNSET+alt}", ""),
    ("${SET:?msg}", "v"), ("${EMPTY?msg}", ""),
    ("${UNSET:-${SET}}", "v"), ("${UNSET:-${ALSO:-deep}}", "deep"), ("${UNSET:-a:b}", "a:b"),
    ("no dollars", "no dollars"),
])
def test_forms(text, expected):
    assert run(text)[0] == expected


def test_unset_without_default_is_empty_with_a_warning():
    assert run("x${UNSET}y") == ("xy", ["variable UNSET is not set, using an empty string"])


@pytest.mark.parametrize("text, message", [
    ("${UNSET:?give it}", "f:1:1: expected variable UNSET to be set: give it"),
    ("${EMPTY:?}", "f:1:1: expected variable EMPTY to be set: is required"),
    ("${UNSET?no}", "f:1:1: expected variable UNSET to be set: no"),
    ("${", "f:1:1: expected '}' to close '${' in '${'"),
    ("${}", "f:1:1: expected a variable name in '${}'"),
    ("${A B}", "f:1:1: expected one of :- - :? ? :+ + after A in '${A B}'"),
    ("cost $5", "f:1:1: expected a variable name after '$' in 'cost $5' (write '$$' for a literal '$')"),
    ("end$", "f:1:1: expected a variable name after '$' in 'end$' (write '$$' for a literal '$')"),
])
def test_errors(text, message):
    with pytest.raises(StackFileError) as info:
        run(text)
    assert str(info.value) == message


@given(st.text(alphabet=st.characters(blacklist_characters="$"), max_size=40))
def test_text_without_dollars_is_unchanged(text):
    assert run(text) == (text, [])


@given(st.text(max_size=40))
def test_escaped_text_comes_back_literally(text):
    assert run(text.replace("$", "$$"))[0] == text


@given(st.text(max_size=30))
def test_any_text_either_interpolates_or_raises_stack_file_error(text):
    try:
        result, _ = run(text)
    except StackFileError:
        return
    assert isinstance(result, str)
