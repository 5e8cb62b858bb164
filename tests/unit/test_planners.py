"""Size planners: volume resize (the reference rule step by step) and storage pool expansion."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from agent.actions.pool_expand.spec import PoolExpandPlan, plan_pool_expand
from agent.actions.volume_resize.spec import ResizePlan, plan_volume_resize
from agent.core.catalog import DeclineCode, Declined
from agent.core.pools import PoolShape, ScaleType
from agent.core.quantity import GIB

TIB = 1024 * GIB
GB = 10**9


# --- volume resize ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "current", "expected"),
    [
        (1, 400 * GIB, ResizePlan(current_bytes=400 * GIB, target_bytes=800 * GIB, capped=False)),
        (2, 800 * GIB, ResizePlan(current_bytes=800 * GIB, target_bytes=TIB, capped=True)),
        (3, TIB, Declined(code="AtMaxSize", message="at maxsize 1Ti (current 1Ti)")),
    ],
)
def test_reference_rule_step_by_step(step: int, current: int, expected: ResizePlan | Declined) -> None:
    plan = plan_volume_resize(current_bytes=current, scale_percentage=Fraction(100), max_bytes=TIB)
    assert plan == expected, f"step {step}"


def test_reference_rule_chained_until_declined() -> None:
    sizes = [400 * GIB]
    for _ in range(5):
        outcome = plan_volume_resize(current_bytes=sizes[-1], scale_percentage=Fraction(100), max_bytes=TIB)
        if not isinstance(outcome, ResizePlan):
            break
        sizes.append(outcome.target_bytes)
    assert sizes == [400 * GIB, 800 * GIB, TIB]
    assert isinstance(outcome, Declined)
    assert outcome.code == DeclineCode.AT_MAX_SIZE


@pytest.mark.parametrize(
    ("current", "percentage", "max_bytes", "min_step", "target", "capped"),
    [
        # the default scalepercentage of 50
        (400 * GIB, Fraction(50), TIB, 0, 600 * GIB, False),
        (600 * GIB, Fraction(50), TIB, 0, 900 * GIB, False),
        (900 * GIB, Fraction(50), TIB, 0, TIB, True),
        # no maxsize: never capped
        (TIB, Fraction(100), None, 0, 2 * TIB, False),
        # a target exactly at maxsize is not capped
        (512 * GIB, Fraction(100), TIB, 0, TIB, False),
        # growth rounds up to a whole GiB
        (10 * GIB, Fraction(1), None, 0, 11 * GIB, False),
        (400 * GB, Fraction(100), None, 0, 746 * GIB, False),
        (1, Fraction(100), None, 0, GIB, False),
        (GIB, Fraction(1, 10**9), None, 0, 2 * GIB, False),
        (10 * GIB, Fraction(25, 2), None, 0, 12 * GIB, False),
        # a minimum step wins over a small percentage
        (10 * GIB, Fraction(10), None, 5 * GIB, 15 * GIB, False),
        (10 * GIB, Fraction(100), None, 5 * GIB, 20 * GIB, False),
        (10 * GIB, Fraction(0), None, 5 * GIB, 15 * GIB, False),
        (10 * GIB, Fraction(-10), None, 5 * GIB, 15 * GIB, False),
        (10 * GIB, Fraction(0), 12 * GIB, 5 * GIB, 12 * GIB, True),
        # the minimum step is rounded up to a whole GiB too
        (10 * GIB, Fraction(0), None, 1, 11 * GIB, False),
        # below maxsize by less than a GiB: straight to maxsize
        (TIB - 1, Fraction(100), TIB, 0, TIB, True),
        (TIB - 1, Fraction(1, 10**12), TIB, 0, TIB, False),
    ],
)
def test_volume_resize_plans(
    *, current: int, percentage: Fraction, max_bytes: int | None, min_step: int, target: int, capped: bool
) -> None:
    plan = plan_volume_resize(
        current_bytes=current, scale_percentage=percentage, max_bytes=max_bytes, min_step_bytes=min_step
    )
    assert plan == ResizePlan(current_bytes=current, target_bytes=target, capped=capped)
    assert plan.target_bytes > current


def test_volume_resize_in_ints_is_the_exact_arithmetic_of_the_docstring() -> None:
    """The planner works in ints; the docstring's arithmetic in exact fractions gives the same target."""
    rng = random.Random(7)
    for _ in range(2000):
        current = rng.choice([1, GIB - 1, 10 * GIB, 400 * GB, rng.randrange(1, 5 * TIB)])
        percentage = Fraction(rng.randrange(-50, 400), rng.choice([1, 2, 3, 7, 10**9]))
        min_step = rng.choice([0, 0, 1, 5 * GIB, rng.randrange(0, 100 * GIB)])
        increase = max(current * percentage / 100, Fraction(min_step))
        plan = plan_volume_resize(
            current_bytes=current, scale_percentage=percentage, max_bytes=None, min_step_bytes=min_step
        )
        if increase <= 0:
            assert isinstance(plan, Declined) and plan.code == "NoGrowth", (current, percentage, min_step)
        else:
            expected = -(-math.ceil(current + increase) // GIB) * GIB
            assert plan == ResizePlan(current_bytes=current, target_bytes=expected, capped=False)


@pytest.mark.parametrize(
    ("current", "percentage", "max_bytes", "min_step", "code", "message"),
    [
        (None, Fraction(100), TIB, 0, "NoData", "no data: the current size is unknown"),
        (0, Fraction(100), TIB, 0, "NoData", "no data: the current size is 0"),
        (-1, Fraction(100), TIB, 0, "NoData", "no data: the current size is -1"),
        (TIB, Fraction(100), TIB, 0, "AtMaxSize", "at maxsize 1Ti (current 1Ti)"),
        (2 * TIB, Fraction(100), TIB, 0, "AtMaxSize", "above maxsize 1Ti (current 2Ti)"),
        (2 * TIB, Fraction(100), TIB, 5 * GIB, "AtMaxSize", "above maxsize 1Ti (current 2Ti)"),
        (
            400 * GIB,
            Fraction(0),
            TIB,
            0,
            "NoGrowth",
            "no growth: scalepercentage 0% and minimum step 0 add nothing",
        ),
        (
            400 * GIB,
            Fraction(-10),
            TIB,
            0,
            "NoGrowth",
            "no growth: scalepercentage -10% and minimum step 0 add nothing",
        ),
        (
            400 * GIB,
            Fraction(0),
            None,
            -GIB,
            "NoGrowth",
            "no growth: scalepercentage 0% and minimum step -1Gi add nothing",
        ),
        (
            400 * GIB,
            Fraction(-1, 2),
            None,
            0,
            "NoGrowth",
            "no growth: scalepercentage -0.5% and minimum step 0 add nothing",
        ),
    ],
)
def test_volume_resize_declines(
    *,
    current: int | None,
    percentage: Fraction,
    max_bytes: int | None,
    min_step: int,
    code: str,
    message: str,
) -> None:
    plan = plan_volume_resize(
        current_bytes=current, scale_percentage=percentage, max_bytes=max_bytes, min_step_bytes=min_step
    )
    assert plan == Declined(code=code, message=message)


def test_decline_codes_are_the_documented_strings() -> None:
    assert {code.value for code in DeclineCode} == {"AtMaxSize", "AtMaxDrives", "NoData", "NoGrowth"}


# --- storage pool expansion ------------------------------------------------------------------

FOUR_BY_100 = PoolShape(total_bytes=400 * GIB, drive_count=4, drive_size_bytes=100 * GIB)
ADD = ScaleType.ADD_DISK
RESIZE = ScaleType.RESIZE_DISK
AUTO = ScaleType.AUTO


def _add_disk(*, drives: int, capped: bool = False, pool: PoolShape = FOUR_BY_100) -> PoolExpandPlan:
    return PoolExpandPlan(
        current_bytes=pool.total_bytes,
        target_bytes=pool.total_bytes + drives * pool.drive_size_bytes,
        scale_type=ADD,
        drives_added=drives,
        new_drive_size_bytes=pool.drive_size_bytes,
        capped=capped,
    )


def _resize_disk(*, drive_size: int, capped: bool = False, pool: PoolShape = FOUR_BY_100) -> PoolExpandPlan:
    return PoolExpandPlan(
        current_bytes=pool.total_bytes,
        target_bytes=pool.total_bytes + pool.drive_count * (drive_size - pool.drive_size_bytes),
        scale_type=RESIZE,
        drives_added=0,
        new_drive_size_bytes=drive_size,
        capped=capped,
    )


@pytest.mark.parametrize(
    ("case", "percentage", "size", "scale_type", "max_bytes", "max_drives", "expected"),
    [
        # add-disk: whole drives of the existing size
        ("add 50%", Fraction(50), None, ADD, None, None, _add_disk(drives=2)),
        ("add 30% rounds up to 2 drives", Fraction(30), None, ADD, None, None, _add_disk(drives=2)),
        ("add 1 byte is 1 drive", None, 1, ADD, None, None, _add_disk(drives=1)),
        ("add 100Gi is 1 drive", None, 100 * GIB, ADD, None, None, _add_disk(drives=1)),
        ("add 100Gi+1 is 2 drives", None, 100 * GIB + 1, ADD, None, None, _add_disk(drives=2)),
        ("add exactly to max", Fraction(50), None, ADD, 600 * GIB, None, _add_disk(drives=2)),
        ("add capped by max", Fraction(100), None, ADD, 550 * GIB, None, _add_disk(drives=1, capped=True)),
        ("add capped by max drives", Fraction(50), None, ADD, None, 5, _add_disk(drives=1, capped=True)),
        ("add within max drives", Fraction(50), None, ADD, None, 6, _add_disk(drives=2)),
        (
            "add capped by max drives, then max",
            Fraction(100),
            None,
            ADD,
            550 * GIB,
            7,
            _add_disk(drives=1, capped=True),
        ),
        # resize-disk: every drive grows equally, to a whole GiB
        ("resize 50%", Fraction(50), None, RESIZE, None, None, _resize_disk(drive_size=150 * GIB)),
        ("resize 10%", Fraction(10), None, RESIZE, None, None, _resize_disk(drive_size=110 * GIB)),
        (
            "resize 0.5% rounds up",
            Fraction(1, 2),
            None,
            RESIZE,
            None,
            None,
            _resize_disk(drive_size=101 * GIB),
        ),
        ("resize 1 byte rounds up", None, 1, RESIZE, None, None, _resize_disk(drive_size=101 * GIB)),
        (
            "resize ignores max drives",
            Fraction(50),
            None,
            RESIZE,
            None,
            4,
            _resize_disk(drive_size=150 * GIB),
        ),
        (
            "resize capped exactly",
            Fraction(100),
            None,
            RESIZE,
            500 * GIB,
            None,
            _resize_disk(drive_size=125 * GIB, capped=True),
        ),
        (
            "resize capped floors to a whole GiB",
            Fraction(100),
            None,
            RESIZE,
            450 * GIB,
            None,
            _resize_disk(drive_size=112 * GIB, capped=True),
        ),
        # auto: add-disk when the drives fit, resize-disk otherwise
        ("auto without max drives adds", Fraction(50), None, AUTO, None, None, _add_disk(drives=2)),
        ("auto within max drives adds", Fraction(50), None, AUTO, None, 6, _add_disk(drives=2)),
        (
            "auto past max drives resizes",
            Fraction(50),
            None,
            AUTO,
            None,
            5,
            _resize_disk(drive_size=150 * GIB),
        ),
        (
            "auto at max drives resizes",
            Fraction(50),
            None,
            AUTO,
            None,
            4,
            _resize_disk(drive_size=150 * GIB),
        ),
        (
            "auto adds fewer drives under max",
            Fraction(100),
            None,
            AUTO,
            650 * GIB,
            None,
            _add_disk(drives=2, capped=True),
        ),
        (
            "auto resizes when no drive fits under max",
            Fraction(100),
            None,
            AUTO,
            450 * GIB,
            None,
            _resize_disk(drive_size=112 * GIB, capped=True),
        ),
        (
            "auto resizes uncapped when the growth fits under max",
            Fraction(10),
            None,
            AUTO,
            450 * GIB,
            None,
            _resize_disk(drive_size=110 * GIB),
        ),
    ],
)
def test_pool_expand_plans(
    *,
    case: str,
    percentage: Fraction | None,
    size: int | None,
    scale_type: ScaleType,
    max_bytes: int | None,
    max_drives: int | None,
    expected: PoolExpandPlan,
) -> None:
    plan = plan_pool_expand(
        pool=FOUR_BY_100,
        scale_percentage=percentage,
        scale_size_bytes=size,
        scale_type=scale_type,
        max_bytes=max_bytes,
        max_drives=max_drives,
    )
    assert plan == expected, case
    assert plan.target_bytes > plan.current_bytes
    assert max_bytes is None or plan.target_bytes <= max_bytes


def test_pool_expand_add_disk_keeps_the_total_a_multiple_of_the_drive_size() -> None:
    plan = plan_pool_expand(
        pool=FOUR_BY_100,
        scale_percentage=Fraction(77),
        scale_size_bytes=None,
        scale_type=ADD,
        max_bytes=None,
    )
    assert isinstance(plan, PoolExpandPlan)
    assert plan.target_bytes % FOUR_BY_100.drive_size_bytes == 0
    assert plan.drives_added == 4


def test_pool_expand_unaligned_drives_become_whole_gib() -> None:
    pool = PoolShape(total_bytes=300 * GB, drive_count=3, drive_size_bytes=100 * GB)
    plan = plan_pool_expand(pool=pool, scale_percentage=None, scale_size_bytes=1, scale_type=RESIZE, max_bytes=None)
    assert plan == _resize_disk(drive_size=94 * GIB, pool=pool)


def test_pool_expand_uses_the_usable_total_as_current() -> None:
    pool = PoolShape(total_bytes=390 * GIB, drive_count=4, drive_size_bytes=100 * GIB)
    plan = plan_pool_expand(pool=pool, scale_percentage=None, scale_size_bytes=GIB, scale_type=ADD, max_bytes=TIB)
    assert plan == _add_disk(drives=1, pool=pool)
    assert plan.target_bytes == 490 * GIB


@pytest.mark.parametrize(
    ("case", "pool", "percentage", "size", "scale_type", "max_bytes", "max_drives", "code", "message"),
    [
        ("no pool", None, Fraction(50), None, AUTO, TIB, None, "NoData", "no data: the pool is unknown"),
        (
            "capacity 0",
            PoolShape(total_bytes=0, drive_count=4, drive_size_bytes=100 * GIB),
            Fraction(50),
            None,
            AUTO,
            TIB,
            None,
            "NoData",
            "no data: the pool has total 0, 4 drives of 100Gi",
        ),
        (
            "no drives",
            PoolShape(total_bytes=400 * GIB, drive_count=0, drive_size_bytes=100 * GIB),
            Fraction(50),
            None,
            ADD,
            TIB,
            None,
            "NoData",
            "no data: the pool has total 400Gi, 0 drives of 100Gi",
        ),
        (
            "drive size 0",
            PoolShape(total_bytes=400 * GIB, drive_count=4, drive_size_bytes=0),
            None,
            GIB,
            RESIZE,
            TIB,
            None,
            "NoData",
            "no data: the pool has total 400Gi, 4 drives of 0",
        ),
        (
            "at max",
            FOUR_BY_100,
            Fraction(50),
            None,
            AUTO,
            400 * GIB,
            None,
            "AtMaxSize",
            "at maxsize 400Gi (current 400Gi)",
        ),
        (
            "above max",
            FOUR_BY_100,
            Fraction(50),
            None,
            RESIZE,
            300 * GIB,
            None,
            "AtMaxSize",
            "above maxsize 300Gi (current 400Gi)",
        ),
        (
            "add-disk: not one drive fits",
            FOUR_BY_100,
            Fraction(50),
            None,
            ADD,
            450 * GIB,
            None,
            "AtMaxSize",
            "at maxsize 450Gi: one more drive of 100Gi would pass it (current 400Gi)",
        ),
        (
            "resize-disk: not one GiB per drive fits",
            FOUR_BY_100,
            Fraction(50),
            None,
            RESIZE,
            403 * GIB,
            None,
            "AtMaxSize",
            "at maxsize 403Gi: growing each of the 4 drives of 100Gi to a whole GiB would pass it (current 400Gi)",
        ),
        (
            "auto: neither a drive nor a GiB per drive fits",
            FOUR_BY_100,
            Fraction(50),
            None,
            AUTO,
            403 * GIB,
            None,
            "AtMaxSize",
            "at maxsize 403Gi: growing each of the 4 drives of 100Gi to a whole GiB would pass it (current 400Gi)",
        ),
        (
            "add-disk at max drives",
            FOUR_BY_100,
            Fraction(50),
            None,
            ADD,
            None,
            4,
            "AtMaxDrives",
            "at max drives 4 (the pool has 4 drives)",
        ),
        (
            "add-disk beyond max drives",
            FOUR_BY_100,
            Fraction(50),
            None,
            ADD,
            None,
            3,
            "AtMaxDrives",
            "at max drives 3 (the pool has 4 drives)",
        ),
        (
            "zero percent",
            FOUR_BY_100,
            Fraction(0),
            None,
            AUTO,
            TIB,
            None,
            "NoGrowth",
            "no growth: scalepercentage 0% adds nothing",
        ),
        (
            "zero size",
            FOUR_BY_100,
            None,
            0,
            ADD,
            TIB,
            None,
            "NoGrowth",
            "no growth: scalesize 0 adds nothing",
        ),
        (
            "negative size",
            FOUR_BY_100,
            None,
            -GIB,
            RESIZE,
            TIB,
            None,
            "NoGrowth",
            "no growth: scalesize -1Gi adds nothing",
        ),
    ],
)
def test_pool_expand_declines(
    *,
    case: str,
    pool: PoolShape | None,
    percentage: Fraction | None,
    size: int | None,
    scale_type: ScaleType,
    max_bytes: int | None,
    max_drives: int | None,
    code: str,
    message: str,
) -> None:
    plan = plan_pool_expand(
        pool=pool,
        scale_percentage=percentage,
        scale_size_bytes=size,
        scale_type=scale_type,
        max_bytes=max_bytes,
        max_drives=max_drives,
    )
    assert plan == Declined(code=code, message=message), case


@pytest.mark.parametrize(("percentage", "size"), [(None, None), (Fraction(50), GIB)], ids=["neither", "both"])
def test_pool_expand_needs_exactly_one_of_percentage_and_size(percentage: Fraction | None, size: int | None) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        plan_pool_expand(
            pool=FOUR_BY_100,
            scale_percentage=percentage,
            scale_size_bytes=size,
            scale_type=AUTO,
            max_bytes=None,
        )


def test_scale_type_values() -> None:
    assert [scale_type.value for scale_type in ScaleType] == ["add-disk", "resize-disk", "auto"]
