"""The stream-infer Grafana dashboard, as typed code (grafana-foundation-sdk).

``python deploy/generate.py`` writes it to ``deploy/grafana/stream-infer.json``, which
docker-compose provisions and which can be imported into any Grafana 11 or later. Edit this
file, not the JSON: a test fails while the two differ.

Counters and histograms carry no ``group`` label; every query keeps the workers of the
selected group with ``and on (job, instance) stream_infer_group_members{group="$group"}``.
Lag and desired replicas are exported alike by every replica, so they are combined with
``max``, never ``sum``.
"""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    dashboard,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import prometheus as prometheus_models

__all__ = ["DATASOURCE_VARIABLE", "GROUP_VARIABLE", "build", "to_json"]

DATASOURCE_VARIABLE = "datasource"
GROUP_VARIABLE = "group"
JOB = "stream-infer"

_DATASOURCE = models.DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VARIABLE}}}")
_GROUP = f'group="${GROUP_VARIABLE}"'
_IN_GROUP = f"and on (job, instance) stream_infer_group_members{{{_GROUP}}}"
_RATE = "$__rate_interval"
# Events per second: Grafana's closest unit ("ops/s") reads right for a stream.
_PER_SECOND = "ops"


def _in_group(expr: str) -> str:
    """``expr`` restricted to the workers of the selected consumer group."""
    return f"{expr} {_IN_GROUP}"


def _rate(metric: str) -> str:
    return _in_group(f"rate({metric}[{_RATE}])")


def _query(expr: str, legend: str, ref_id: str, *, instant: bool = False) -> prometheus.Dataquery:
    query = (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .datasource(_DATASOURCE)
    )
    return query.instant() if instant else query.range()


def _queries(*pairs: tuple[str, str]) -> list[prometheus.Dataquery]:
    return [_query(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def _timeseries(
    title: str, description: str, unit: str, *pairs: tuple[str, str], span: int = 12
) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(_DATASOURCE)
        .unit(unit)
        .targets(_queries(*pairs))  # type: ignore[arg-type]
        .legend(
            common.VizLegendOptions()
            .display_mode(common_models.LegendDisplayMode.TABLE)
            .placement(common_models.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI))
        .fill_opacity(10)
        .height(8)
        .span(span)
    )


def _quantiles(metric: str) -> list[tuple[str, str]]:
    buckets = f"sum by (le) ({_rate(metric + '_bucket')})"
    return [(f"histogram_quantile({q}, {buckets})", f"p{q * 100:g}") for q in (0.5, 0.95, 0.99)]


def _stat(title: str, description: str, unit: str, expr: str) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(_DATASOURCE)
        .unit(unit)
        .with_target(_query(expr, title, "A"))
        .graph_mode(common_models.BigValueGraphMode.AREA)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
        .height(4)
        .span(4)
    )


def _info_table(title: str, description: str, metric: str, columns: list[str]) -> table.Panel:
    """An ``*_info`` gauge as a table: one row per worker (``instance``), then ``columns``."""
    order = {"instance": 0} | {name: i for i, name in enumerate(columns, start=1)}
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(_DATASOURCE)
        .with_target(
            _query(_in_group(metric), "", "A", instant=True).format(
                prometheus_models.PromQueryFormat.TABLE
            )
        )
        .with_transformation(
            models.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True},
                    "indexByName": order,
                },
            )
        )
    )


def _thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=value, color=color) for value, color in steps])
    )


def _state_timeline(
    title: str, description: str, expr: str, zero: tuple[str, str], one: tuple[str, str]
) -> statetimeline.Panel:
    mapping = models.ValueMap(
        options={
            "0": models.ValueMappingResult(text=zero[0], color=zero[1], index=0),
            "1": models.ValueMappingResult(text=one[0], color=one[1], index=1),
        }
    )
    return (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .datasource(_DATASOURCE)
        .with_target(_query(_in_group(expr), "{{instance}}", "A"))
        .mappings([mapping])
        .show_value(common_models.VisibilityMode.NEVER)
        .height(6)
        .span(12)
    )


def _overview_row(board: dashboard.Dashboard) -> None:
    board.with_row(dashboard.Row("Overview"))
    board.with_panel(
        _stat(
            "Lag",
            "Events between the group's committed offsets and the end of its input topics.",
            "short",
            f"sum(max by (topic, partition) (stream_infer_consumer_lag{{{_GROUP}}}))",
        ).thresholds(_thresholds((None, "green"), (10000, "orange")))
    )
    board.with_panel(
        _stat(
            "Input rate",
            "Events per second arriving on the input topics.",
            _PER_SECOND,
            f"max(stream_infer_input_rate{{{_GROUP}}})",
        )
    )
    board.with_panel(
        _stat(
            "Predictions",
            "Predictions per second written by the group.",
            _PER_SECOND,
            f"sum({_rate('stream_infer_predictions_total')})",
        )
    )
    board.with_panel(
        _stat(
            "Desired replicas",
            "Replicas the workers compute for the input rate and the lag (capped by partitions).",
            "short",
            f"max(stream_infer_desired_replicas{{{_GROUP}}})",
        )
    )
    board.with_panel(
        _stat(
            "Group members",
            "Members of the consumer group.",
            "short",
            f"max(stream_infer_group_members{{{_GROUP}}})",
        )
    )
    board.with_panel(
        _info_table(
            "Model",
            "Model, version and the execution provider each worker really runs on.",
            "stream_infer_model_info",
            ["model", "version", "provider"],
        )
        .height(4)
        .span(4)
    )


def _kafka_row(board: dashboard.Dashboard) -> None:
    board.with_row(dashboard.Row("Kafka"))
    board.with_panel(
        _timeseries(
            "Consumer lag per partition",
            "Committed offset to high watermark, per input partition (the same on every replica).",
            "short",
            (
                f"max by (topic, partition) (stream_infer_consumer_lag{{{_GROUP}}})",
                "{{topic}}[{{partition}}]",
            ),
        )
    )
    board.with_panel(
        _timeseries(
            "Throughput",
            "Events arriving, consumed and predicted per second.",
            _PER_SECOND,
            (f"max(stream_infer_input_rate{{{_GROUP}}})", "arriving"),
            (
                f"sum by (topic) ({_rate('stream_infer_consumed_messages_total')})",
                "consumed {{topic}}",
            ),
            (f"sum({_rate('stream_infer_predictions_total')})", "predictions"),
        )
    )
    board.with_panel(
        _timeseries(
            "Dead letters by stage",
            "Events sent to the dead-letter topic per second, by the stage that rejected them.",
            _PER_SECOND,
            (f"sum by (stage) ({_rate('stream_infer_dead_letters_total')})", "{{stage}}"),
        ).stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL))
    )
    board.with_panel(
        _timeseries(
            "Dead-letter ratio",
            "Dead letters per consumed event.",
            "percentunit",
            (
                f"sum({_rate('stream_infer_dead_letters_total')})"
                f" / sum({_rate('stream_infer_consumed_messages_total')})",
                "dead letters / consumed",
            ),
        )
    )
    _pipeline_panels(board)


def _pipeline_panels(board: dashboard.Dashboard) -> None:
    board.with_panel(
        _timeseries(
            "Rebalances",
            "Partitions assigned, revoked and lost per second, per kind: a steady stream of "
            "them means members come and go (crash loops, too short a session timeout).",
            _PER_SECOND,
            (f"sum by (kind) ({_rate('stream_infer_rebalance_partitions_total')})", "{{kind}}"),
        )
    )
    board.with_panel(
        _timeseries(
            "Pipeline",
            "Batches consumed but not yet acknowledged, per worker (bounded by "
            "processing.max_in_flight_batches), and how old each worker's lag figures are "
            "(refreshed every metrics.lag_interval_s).",
            "short",
            (_in_group("stream_infer_in_flight_batches"), "in flight {{instance}}"),
            (
                f"stream_infer_consumer_lag_age_seconds{{{_GROUP}}}",
                "lag age (s) {{instance}}",
            ),
        )
    )


def _latency_row(board: dashboard.Dashboard) -> None:
    board.with_row(dashboard.Row("Latency and batches"))
    board.with_panel(
        _timeseries(
            "End-to-end latency",
            "From the event's Kafka timestamp to its output acknowledged by the broker.",
            "s",
            *_quantiles("stream_infer_end_to_end_latency_seconds"),
            span=8,
        )
    )
    board.with_panel(
        _timeseries(
            "Inference duration",
            "One onnxruntime call, per batch.",
            "s",
            *_quantiles("stream_infer_inference_duration_seconds"),
            span=8,
        )
    )
    sizes = "stream_infer_batch_size"
    board.with_panel(
        _timeseries(
            "Batch size",
            "Rows per inference call.",
            "short",
            *_quantiles(sizes)[:2],
            (
                f"sum({_rate(sizes + '_sum')}) / sum({_rate(sizes + '_count')})",
                "mean",
            ),
            span=8,
        )
    )


def _scaling_row(board: dashboard.Dashboard) -> None:
    board.with_row(dashboard.Row("Scaling"))
    board.with_panel(
        _timeseries(
            "Desired vs actual replicas",
            "What the workers ask for (the KEDA desired-replicas trigger follows it), the group's "
            "members, and the workers Prometheus scrapes successfully.",
            "short",
            (f"max(stream_infer_desired_replicas{{{_GROUP}}})", "desired"),
            (f"max(stream_infer_group_members{{{_GROUP}}})", "group members"),
            (f'count(up{{job="{JOB}"}} == 1)', "workers up"),
        )
    )
    board.with_panel(
        _timeseries(
            "Capacity vs input",
            "Measured processing capacity of the group's workers against the arriving rate.",
            _PER_SECOND,
            (f"max(stream_infer_input_rate{{{_GROUP}}})", "input rate"),
            (f"sum({_in_group('stream_infer_capacity_events_per_second')})", "capacity (sum)"),
            (_in_group("stream_infer_capacity_events_per_second"), "capacity {{instance}}"),
        )
    )
    board.with_panel(
        _timeseries(
            "Assigned partitions",
            "Partitions each worker owns.",
            "short",
            (_in_group("stream_infer_assigned_partitions"), "{{instance}}"),
        )
    )
    board.with_panel(
        _state_timeline(
            "Paused",
            "A worker pauses its partitions when its pipeline is full (backpressure).",
            "stream_infer_paused",
            zero=("running", "green"),
            one=("paused", "orange"),
        )
    )
    board.with_panel(
        _state_timeline(
            "Ready",
            "Model loaded and group joined (/readyz).",
            "stream_infer_ready",
            zero=("not ready", "red"),
            one=("ready", "green"),
        )
    )
    board.with_panel(
        _state_timeline(
            "Healthy",
            "The worker loop makes progress (/healthz).",
            "stream_infer_healthy",
            zero=("stuck", "red"),
            one=("healthy", "green"),
        )
    )


def _drift_row(board: dashboard.Dashboard) -> None:
    drift_steps = _thresholds((None, "green"), (0.1, "yellow"), (0.25, "red"))
    board.with_row(dashboard.Row("Drift (with drift.baseline set)"))
    board.with_panel(
        bargauge.Panel()
        .title("Top drifting features")
        .description(
            "Population Stability Index of each input feature, recent window against the "
            "baseline; the worst replica counts. Above 0.25: a major shift (alerted)."
        )
        .datasource(_DATASOURCE)
        .with_target(
            _query(
                "topk(10, max by (input, feature) "
                f"({_in_group('stream_infer_feature_drift_psi')}))",
                "{{input}}[{{feature}}]",
                "A",
                instant=True,
            )
        )
        .thresholds(drift_steps)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
        .min(0)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .height(8)
        .span(12)
    )
    board.with_panel(
        _timeseries(
            "Output drift",
            "Population Stability Index of each output value against the baseline.",
            "short",
            (
                f"max by (output, index) ({_in_group('stream_infer_output_drift_psi')})",
                "{{output}}[{{index}}]",
            ),
        )
        .thresholds(drift_steps)
        .thresholds_style(
            common.GraphThresholdsStyleConfig().mode(common_models.GraphThresholdsStyleMode.LINE)
        )
    )
    board.with_panel(
        _timeseries(
            "Outputs over the drift window",
            "Mean and standard deviation of each output value over the drift window, per "
            "worker, and how many predicted rows the window holds.",
            "short",
            (_in_group("stream_infer_output_window_mean"), "mean {{output}}[{{index}}]"),
            (_in_group("stream_infer_output_window_stddev"), "stddev {{output}}[{{index}}]"),
            (_in_group("stream_infer_drift_window_rows"), "rows {{instance}}"),
        )
    )


def _rollout_row(board: dashboard.Dashboard) -> None:
    board.with_row(dashboard.Row("Model rollout (hot reload, canary, shadow)"))
    board.with_panel(
        _info_table(
            "Models served",
            "Every model each worker answers with: primary, canary, shadow.",
            "stream_infer_variant_info",
            ["variant", "model", "version", "provider"],
        )
        .height(8)
        .span(8)
    )
    board.with_panel(
        _timeseries(
            "Hot reloads",
            "Replaced model files served (ok) or refused (the old model keeps serving; the log "
            "says why), per rate interval.",
            "short",
            (
                f"sum by (result) (increase(stream_infer_model_reloads_total[{_RATE}]) "
                f"{_IN_GROUP})",
                "{{result}}",
            ),
            span=8,
        )
    )
    board.with_panel(
        _timeseries(
            "Rows per version",
            "Rows each variant and version predicted, or failed on alone (a canary's failed "
            "rows are answered by the primary).",
            _PER_SECOND,
            (
                f"sum by (variant, version, result) ({_rate('stream_infer_variant_rows_total')})",
                "{{variant}} {{version}} {{result}}",
            ),
            span=8,
        )
    )
    duration = "stream_infer_variant_inference_duration_seconds"
    board.with_panel(
        _timeseries(
            "Inference duration per version",
            "p99 of one inference call, per variant and version.",
            "s",
            (
                "histogram_quantile(0.99, sum by (le, variant, version) "
                f"({_rate(duration + '_bucket')}))",
                "p99 {{variant}} {{version}}",
            ),
            (
                f"sum by (variant, version) ({_rate(duration + '_sum')}) / sum by "
                f"(variant, version) ({_rate(duration + '_count')})",
                "mean {{variant}} {{version}}",
            ),
            span=8,
        )
    )
    board.with_panel(
        _timeseries(
            "Shadow agreement",
            "Share of rows where shadow and primary agree (equal integers, equal argmax), "
            "over the shadow's window and over the dashboard's rate interval.",
            "percentunit",
            (f"min by (output) ({_in_group('stream_infer_shadow_agreement')})", "{{output}}"),
            (
                f"sum by (output) ({_rate('stream_infer_shadow_agreeing_rows_total')}) / "
                f"sum by (output) ({_rate('stream_infer_shadow_compared_rows_total')})",
                "{{output}} (rate)",
            ),
            span=8,
        )
    )
    board.with_panel(
        _timeseries(
            "Shadow difference and health",
            "Mean absolute difference per row between shadow and primary, and the shadow's "
            "batches and records by result (failed, dropped: never a primary prediction lost).",
            "short",
            (
                f"max by (output) ({_in_group('stream_infer_shadow_mean_abs_diff')})",
                "mean |diff| {{output}}",
            ),
            (
                f"sum by (output) ({_rate('stream_infer_shadow_abs_diff_total')}) / "
                f"sum by (output) ({_rate('stream_infer_shadow_compared_rows_total')})",
                "mean |diff| {{output}} (rate)",
            ),
            (
                f"sum by (result) ({_rate('stream_infer_shadow_batches_total')})",
                "batches {{result}}",
            ),
            (
                f"sum by (result) ({_rate('stream_infer_shadow_records_total')})",
                "records {{result}}",
            ),
            span=8,
        )
    )


def build() -> models.Dashboard:
    """The dashboard model: panels in rows, a data-source and a consumer-group variable."""
    board = (
        dashboard.Dashboard("stream-infer")
        .uid("stream-infer")
        .description("Kafka lag, throughput, latency, dead letters, scaling and drift.")
        .tags(["stream-infer", "kafka", "onnx"])
        .editable()
        .time("now-1h", "now")
        .refresh("10s")
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dashboard.DatasourceVariable(DATASOURCE_VARIABLE)
            .label("Data source")
            .type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable(GROUP_VARIABLE)
            .label("Consumer group")
            .datasource(_DATASOURCE)
            .query("label_values(stream_infer_group_members, group)")
            .current(models.VariableOption(text="stream-infer", value="stream-infer"))
            .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_ASC)
        )
    )
    rows = (_overview_row, _kafka_row, _latency_row, _scaling_row, _drift_row, _rollout_row)
    for add_row in rows:
        add_row(board)
    model = board.build()
    # Unique panel ids: Grafana links, shares and embeds panels by id.
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return model


def to_json() -> str:
    """The dashboard as Grafana's JSON model, stable from run to run (sorted keys)."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(to_json(), end="")
