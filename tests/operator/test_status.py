"""Status pieces: conditions keep their transition time, patches drop what went away."""

from __future__ import annotations

from kubetune_operator import status as st


def test_transition_time_moves_only_when_the_status_flips():
    old = st.conditions_list([st.Condition(st.SUSPENDED_CONDITION, False, "NotSuspended")], [], 1)
    old[0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    same = st.conditions_list([st.Condition(st.SUSPENDED_CONDITION, False, "NotSuspended", "x")], old, 2)
    assert same[0]["lastTransitionTime"] == "2020-01-01T00:00:00Z" and same[0]["observedGeneration"] == 2
    flipped = st.conditions_list([st.Condition(st.SUSPENDED_CONDITION, True, "Suspended")], old, 2)
    assert flipped[0]["lastTransitionTime"] != "2020-01-01T00:00:00Z" and flipped[0]["status"] == "True"


def test_conditions_come_in_a_fixed_order():
    conditions = st.conditions_list([st.Condition(st.FAILED_CONDITION, True, "X"),
                                     st.Condition(st.SPEC_VALID, True, "Valid")], [], None)
    assert [c["type"] for c in conditions] == ["SpecValid", "Failed"]
    assert "observedGeneration" not in conditions[0]


def test_same_status_ignores_only_timestamps():
    a = {"phase": "Running", "conditions": [{"type": "T", "status": "True", "lastTransitionTime": "1"}]}
    b = {"phase": "Running", "conditions": [{"type": "T", "status": "True", "lastTransitionTime": "2"}]}
    assert st.same_status(a, b)
    assert not st.same_status(a, {**b, "phase": "Succeeded"})


def test_merge_patch_nulls_dropped_keys():
    assert st.merge_patch({"phase": "Running", "message": "m"}, {"phase": "Failed"}) == {
        "phase": "Failed", "message": None}


def test_announced_trials_are_kept_as_short_ranges_and_read_back():
    assert st.ranges([5, 0, 1, 2, 3, 7, 9, 10]) == "0-3,5,7,9-10"
    assert st.ranges(range(100_000)) == "0-99999"
    assert st.parse_ranges("0-3,5,7,9-10") == {0, 1, 2, 3, 5, 7, 9, 10} and st.parse_ranges("") == set()
    assert st.parse_ranges("zero-3") is None
