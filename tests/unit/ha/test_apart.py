"""``ha/apart.choose``: when and to whom the leading master hands etcd's raft leadership."""

from swarmlet.ha.apart import choose


def test_only_a_raft_leader_on_our_own_member_is_moved_and_to_the_same_member_everywhere():
    assert choose("b", "b", ["c", "a", "b"]) == "a"
    assert choose("b", "a", ["a", "b", "c"]) is None       # etcd's leader is elsewhere already
    assert choose(None, "a", ["a"]) is None                  # our member is not known
    assert choose("b", "b", ["b"]) is None                   # nobody else answers: keep it
