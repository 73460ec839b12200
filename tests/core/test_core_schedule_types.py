"""Schedule actions have a text form whose parser is its exact inverse."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coinfer.core.schedules import Action, Schedule

names = st.text(alphabet="abcdefgh0123456789_-", min_size=1, max_size=6)


@st.composite
def actions(draw) -> Action:
    kind = draw(st.sampled_from(["recv", "compute", "send"]))
    peer = draw(names) if kind != "compute" else None
    first = draw(st.integers(0, 50)) if kind == "compute" else None
    last = first + draw(st.integers(0, 5)) if first is not None else None
    return Action(
        kind,
        draw(st.integers(0, 10**4)),
        draw(st.integers(-1, 20)),
        peer,
        first,
        last,
        draw(st.integers(0, 10**9)),
    )


@given(actions())
def test_action_text_round_trip(action: Action) -> None:
    assert Action.parse(str(action)) == action


def test_schedule_json_round_trip() -> None:
    acts = {
        "a": (Action("send", 0, -1, "b", nbytes=12), Action("recv", 0, 1, "b", nbytes=4)),
        "b": (
            Action("recv", 0, 0, "a", nbytes=12),
            Action("compute", 0, 0, None, 0, 3),
            Action("send", 0, 0, "a", nbytes=4),
        ),
    }
    sched = Schedule(acts, requests=1, microbatch=1, source="a", assignment=(("b",),))
    again = Schedule.from_dict(sched.to_dict())
    assert again == sched
    assert "b: R0.0<a:12 C0.0[0-3] S0.0>a:4" in str(sched)
