"""`kafka-autopilot backtest` on recorded answers: times, the window, the replay, the summary and the plot.

The history here is a fake range query: a function of time per PVC, answered on the grid Prometheus
would use, so the replay (the real loader, matching, state machine and planners) runs in milliseconds.
The real Prometheus path is in tests/integration/test_backtest_prometheus.py.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from helpers import distinct_colours

from agent.actions.registry import CATALOG
from agent.adapters.files import load_rule_paths
from agent.core.loader import merge_results, parse_rules
from agent.core.matching import TargetObject, pvc_object
from agent.core.policy import parse_policy_file
from agent.core.rules import Rule
from agent.core.samples import RangeSeries
from agent.runtime import backtest_plot
from agent.runtime.backtest import (
    BacktestError,
    BacktestResult,
    Window,
    make_window,
    parse_time,
    run_backtest,
)
from agent.runtime.backtest_output import as_json, render_text, summary, triggered_seconds
from agent.runtime.backtest_plot import PlotUnavailableError, write_plot
from agent.runtime.backtest_sources import ProgressBar
from agent.runtime.ruletest_file import RuleTestFileError, read_inventory

GI = 1024**3
REPO = Path(__file__).resolve().parents[2]
START = 1_800_000_000
NOW = 1_800_086_400.7
USAGE = "100 * (px_volume_usage_bytes / px_volume_capacity_bytes)"


def reference_rule() -> list[Rule]:
    return list(merge_results(load_rule_paths([REPO / "rules" / "kafka-resize.yaml"], catalog=CATALOG)).rules)


def claim(name: str, capacity_gib: int) -> TargetObject:
    return pvc_object(namespace="kafka", name=name, labels={"app": "kafka"}, capacity_bytes=capacity_gib * GI)


Gib = Callable[[float], float | None]


class FakeHistory:
    """Answers range queries from what each claim held (`used`, GiB) and its size (`size`, GiB) at each time:
    the usage percentage as Prometheus computes it, and the capacity series."""

    def __init__(self, used: dict[str, Gib], size: dict[str, Gib]) -> None:
        self.used = used
        self.size = size
        self.range_calls: list[tuple[str, int, int, int]] = []
        self.scraped_from = 0
        """No sample before this time (the window may start before the first scrape)."""
        self.capacity_exported = True

    def range_query(
        self, expr: str, *, start: int, end: int, step: int, on_chunk: Callable[[int], None] | None = None
    ) -> Sequence[RangeSeries]:
        self.range_calls.append((expr, start, end, step))
        if on_chunk is not None:
            on_chunk((end - start) // step + 1)
        times = [t for t in range(start, end + 1, step) if t >= self.scraped_from]
        found = []
        for name, used in self.used.items():
            size = self.size.get(name, lambda t: None)
            if expr == USAGE:
                values = [(t, u, c) for t in times if (u := used(t)) is not None and (c := size(t))]
                points = tuple((float(t), 100 * u / c) for t, u, c in values)
            elif expr == "px_volume_capacity_bytes" and self.capacity_exported:
                points = tuple((float(t), c * GI) for t in times if (c := size(t)))
            else:
                continue
            found.append(RangeSeries(labels={"namespace": "kafka", "pvc": name}, points=points))
        return found


def always(value: float) -> Gib:
    return lambda t: value


def steps(first: float, *changes: tuple[int, float]) -> Gib:
    """`first`, then each (seconds after START, value) from then on."""

    def at(t: float) -> float:
        value = first
        for since, changed in changes:
            if t >= START + since:
                value = changed
        return value

    return at


def live_run() -> FakeHistory:
    """The reference table as a live agent played it: 330Gi (82.5% of 400) at 10 min, resized to 800Gi (seen
    10 s later); 650Gi (81% of 800) at 12 min, resized to 1Ti after its cooldown; 820Gi (80.1% of 1Ti) at 16 min."""
    return FakeHistory(
        used={"data-kafka-0": steps(200, (600, 330), (720, 650), (960, 820))},
        size={"data-kafka-0": steps(400, (610, 800), (920, 1024))},
    )


def backtest(history: FakeHistory, objects: list[TargetObject], window: Window) -> BacktestResult:
    return run_backtest(
        rules=reference_rule(),
        objects=objects,
        window=window,
        range_query=history.range_query,
    )


def actions(result: BacktestResult, key: str) -> list[tuple[str, str]]:
    return [
        (record["time"], f"{record['before']} -> {record['after']}" if record["action"] and record["before"] else "")
        for record in result.records
        if record["event"] == "action-applied" and record["object"] == key
    ]


# --- times and the window ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-15T08:00:00Z", 1_800_000_000),
        ("2027-01-15T10:00:00+02:00", 1_800_000_000),
        ("-24h", 1_800_000_000),
        ("-1d", 1_800_000_000),
        ("-23h60m", 1_800_000_000),
        ("now", 1_800_086_400),
    ],
)
def test_times_are_rfc3339_now_or_a_duration_back_from_now(text: str, expected: int) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [("yesterday", "neither an RFC 3339"), ("2027-01-15T08:00:00", "no time zone"), ("-24", "not a duration")],
)
def test_a_bad_time_says_what_is_expected(text: str, says: str) -> None:
    with pytest.raises(BacktestError, match=says):
        parse_time(text, now=NOW)


def test_a_window_must_run_forwards_with_a_step() -> None:
    with pytest.raises(BacktestError, match="before --to"):
        make_window(start="-1h", end="-2h", step="30s", now=NOW)
    with pytest.raises(BacktestError, match="not a duration"):
        make_window(start="-1h", end="now", step="0.5s", now=NOW)
    window = make_window(start="-1h", end="now", step="30s", now=NOW)
    assert (window.end - window.start, window.step, window.steps) == (3600, 30, 121)


# --- the replay --------------------------------------------------------------------------------------------


def test_a_live_run_of_the_reference_table_replays_with_its_times() -> None:
    history = live_run()
    history.used["data-kafka-1"] = always(160)
    history.size["data-kafka-1"] = always(400)
    # The cluster says 1Ti now; the window starts at the 400Gi history shows.
    objects = [claim("data-kafka-0", 1024), claim("data-kafka-1", 1024)]
    result = backtest(history, objects, Window(start=START, end=START + 1800, step=30))
    assert [expr for expr, *_ in history.range_calls] == [
        USAGE,
        "kubelet_volume_stats_capacity_bytes",
        "px_volume_capacity_bytes",
    ]
    # Done when history shows the new size: the cooldowns start then, as the live agent's did.
    assert actions(result, "kafka/data-kafka-0") == [
        ("2027-01-15T08:10:30.000Z", "400Gi -> 800Gi"),
        ("2027-01-15T08:15:30.000Z", "800Gi -> 1Ti (capped at maxsize)"),
    ]
    planned = [r["time"] for r in result.records if r["event"] == "action-planned"]
    assert planned == ["2027-01-15T08:10:00.000Z", "2027-01-15T08:15:30.000Z"]
    declined = [r for r in result.records if r["event"] == "action-declined" and r["object"] == "kafka/data-kafka-0"]
    assert declined[0]["time"] == "2027-01-15T08:20:30.000Z"
    assert declined[0]["code"] == "AtMaxSize"
    assert actions(result, "kafka/data-kafka-1") == []


def test_a_resize_history_lacks_lowers_the_usage_the_rule_sees_after_it() -> None:
    history = FakeHistory(used={"data-kafka-0": steps(200, (600, 340))}, size={"data-kafka-0": always(400)})
    result = backtest(history, [claim("data-kafka-0", 400)], Window(start=START, end=START + 1800, step=30))
    # 85% of the 400Gi history has is 42.5% of the 800Gi the replay gave it: one resize, done at once.
    assert actions(result, "kafka/data-kafka-0") == [("2027-01-15T08:10:00.000Z", "400Gi -> 800Gi")]
    values = [r["values"][USAGE] for r in result.records if r["event"] == "evaluation"]
    assert values[20] == 85.0
    assert values[-1] == 42.5


def test_a_window_that_starts_before_the_first_scrape_takes_the_first_capacity_in_it() -> None:
    history = FakeHistory(used={"data-kafka-0": steps(200, (60, 340))}, size={"data-kafka-0": always(400)})
    history.scraped_from = START + 30
    result = backtest(history, [claim("data-kafka-0", 800)], Window(start=START, end=START + 60, step=30))
    assert [what for _, what in actions(result, "kafka/data-kafka-0")] == ["400Gi -> 800Gi"]
    assert result.notes == ()


def test_a_claim_history_does_not_size_keeps_its_size_now_and_says_so() -> None:
    history = FakeHistory(used={"data-kafka-0": always(900)}, size={"data-kafka-0": always(1000)})
    history.capacity_exported = False
    result = backtest(history, [claim("data-kafka-0", 800)], Window(start=START, end=START + 60, step=30))
    assert [what for _, what in actions(result, "kafka/data-kafka-0")] == ["800Gi -> 1Ti (capped at maxsize)"]
    assert result.notes == ("kafka/data-kafka-0: no capacity in history at the start; starting from its size now",)


def test_a_gap_in_history_is_no_data_not_a_verdict() -> None:
    history = FakeHistory(
        used={"data-kafka-0": lambda t: None if t < START + 300 else 340.0}, size={"data-kafka-0": always(400)}
    )
    result = backtest(history, [claim("data-kafka-0", 400)], Window(start=START, end=START + 330, step=30))
    outcomes = [r["outcome"] for r in result.records if r["event"] == "evaluation"]
    assert outcomes[:10] == ["no-data"] * 10
    assert [when for when, _ in actions(result, "kafka/data-kafka-0")] == ["2027-01-15T08:05:00.000Z"]


def test_kubernetes_provider_rules_are_left_out_with_the_reason() -> None:
    text = (REPO / "rules" / "kafka-node-failure.yaml").read_text()
    node_rules = list(parse_rules(text, file="kafka-node-failure.yaml", catalog=CATALOG).rules)
    history = FakeHistory(used={}, size={})
    with pytest.raises(BacktestError, match=r"no rule left to replay: .*live Node objects"):
        run_backtest(
            rules=node_rules,
            objects=[],
            window=Window(start=START, end=START + 60, step=30),
            range_query=history.range_query,
        )
    result = run_backtest(
        rules=[*node_rules, *reference_rule()],
        objects=[],
        window=Window(start=START, end=START + 60, step=30),
        range_query=history.range_query,
    )
    assert set(result.left_out) == {rule.name for rule in node_rules}


def test_progress_counts_every_step_read_and_replayed() -> None:
    history = FakeHistory(used={"data-kafka-0": always(40)}, size={"data-kafka-0": always(400)})
    seen: list[tuple[int, int]] = []
    run_backtest(
        rules=reference_rule(),
        objects=[claim("data-kafka-0", 400)],
        window=Window(start=START, end=START + 30 * 249, step=30),
        range_query=history.range_query,
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[-1] == (1000, 1000)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


# --- what it prints -----------------------------------------------------------------------------------------


def test_the_summary_counts_actions_declines_and_time_triggered() -> None:
    result = backtest(live_run(), [claim("data-kafka-0", 400)], Window(start=START, end=START + 1800, step=30))
    facts = summary(result)
    assert facts["actions_by_kind"] == {"openstorage.io.action.volume/resize": 2}
    assert facts["declined_at_maxsize"] == 1
    assert facts["steps"] == 61
    text = render_text(result)
    assert "kafka-resize  kafka/data-kafka-0" in text
    assert "would act: openstorage.io.action.volume/resize 400Gi -> 800Gi" in text
    assert "declined at maxsize:" in text
    assert {r["event"] for r in as_json(result)["records"]} >= {"transition", "action-applied", "action-declined"}


def test_time_triggered_sums_each_stay_and_counts_an_open_one_to_the_end() -> None:
    def move(at: str, to: str) -> dict[str, str]:
        return {"event": "transition", "rule": "r", "object": "o", "time": at, "to": to}

    records = [
        move("2027-01-15T08:00:00Z", "Triggered"),
        move("2027-01-15T08:01:00Z", "Normal"),
        move("2027-01-15T08:02:00Z", "Triggered"),
    ]
    assert triggered_seconds(records, end=START + 300) == {("r", "o"): 60 + 180}


# --- the plot -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replayed() -> BacktestResult:
    history = live_run()
    history.used["data-kafka-1"] = lambda t: 120 + (t - START) / 15
    history.size["data-kafka-1"] = always(400)
    return backtest(
        history,
        [claim("data-kafka-0", 400), claim("data-kafka-1", 400)],
        Window(start=START, end=START + 1800, step=30),
    )


def test_the_png_plot_is_drawn(replayed: BacktestResult, tmp_path: Path) -> None:
    plot = tmp_path / "backtest.png"
    write_plot(replayed, plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.stat().st_size > 5000
    assert distinct_colours(plot) > 1


def test_the_html_plot_embeds_its_image_and_needs_no_network(replayed: BacktestResult, tmp_path: Path) -> None:
    page = tmp_path / "backtest.html"
    write_plot(replayed, page)
    text = page.read_text()
    assert 'src="data:image/png;base64,' in text
    assert len(text) > 5000
    assert "http://" not in text
    assert "https://" not in text


# --- the inventory and the progress bar -------------------------------------------------------------------


def test_an_inventory_lists_objects_as_rule_tests_declare_them(tmp_path: Path) -> None:
    inventory = tmp_path / "objects.yaml"
    inventory.write_text(
        "objects:\n"
        "  - {kind: PersistentVolumeClaim, namespace: kafka, name: data-kafka-0,\n"
        "     labels: {app: kafka}, capacity: 400Gi}\n"
        "  - {kind: Node, name: worker-1}\n"
    )
    objects = read_inventory(inventory)
    assert [(obj.key, obj.capacity_bytes) for obj in objects] == [("kafka/data-kafka-0", 400 * GI), ("worker-1", None)]


def test_a_bad_inventory_names_the_file_line_and_field(tmp_path: Path) -> None:
    inventory = tmp_path / "objects.yaml"
    inventory.write_text(
        "objects:\n  - {kind: PersistentVolumeClaim, name: a, capacity: lots}\n  - {kind: Pod, name: b}\n"
    )
    with pytest.raises(RuleTestFileError) as raised:
        read_inventory(inventory)
    assert len(raised.value.problems) == 2
    assert f"{inventory}:2:" in str(raised.value)
    assert f"{inventory}:3:" in str(raised.value)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_draws_on_a_terminal_only() -> None:
    terminal = Terminal()
    bar = ProgressBar(stream=terminal, width=10)
    bar.show(50, 200)
    bar.done()
    assert terminal.getvalue() == "\r[##........]  25% (50/200 steps)\n"
    piped = io.StringIO()
    ProgressBar(stream=piped).show(50, 200)
    assert piped.getvalue() == ""


def test_a_policy_holds_and_spaces_the_replayed_actions() -> None:
    header = "apiVersion: kafka-autopilot.io/v1alpha1\nkind: AutopilotPolicy\nmetadata: {name: p}\nspec:\n"
    (spaced,) = parse_policy_file(header + "  minResizeInterval: 10m\n", file="p.yaml", catalog=CATALOG).policies
    history = live_run()
    result = run_backtest(
        rules=reference_rule(),
        objects=[claim("data-kafka-0", 400)],
        window=Window(start=START, end=START + 1800, step=30),
        range_query=history.range_query,
        policy=spaced,
    )
    assert [when for when, _ in actions(result, "kafka/data-kafka-0")] == [
        "2027-01-15T08:10:30.000Z",
        "2027-01-15T08:20:00.000Z",
    ]
    assert summary(result)["holds_by_reason"] == {"MinResizeInterval": 1}


def test_without_matplotlib_the_plot_says_how_to_get_it(
    replayed: BacktestResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(name: str) -> None:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(backtest_plot.importlib, "import_module", missing)
    with pytest.raises(PlotUnavailableError, match=r"pip install 'kafka-autopilot\[tools\]'"):
        write_plot(replayed, tmp_path / "plot.png")
    assert not (tmp_path / "plot.png").exists()


def test_the_command_line_does_not_load_matplotlib() -> None:
    """The agent's image has no matplotlib: only `backtest --plot` may import it, and only then."""
    check = "import sys, agent.cli; agent.cli.build_parser(); print('matplotlib' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=REPO)
    assert loaded.stdout.strip() == "False"
