"""Model operations for the native worker: the variants it serves, hot reload, canary, shadow.

Built once at start-up, after the primary model is loaded: the canary and
the shadow are loaded here too. A candidate model that cannot serve (a file
that is missing, corrupt or not compatible with the primary's inputs, a
failing warm-up) is a warning, not a start-up error: the primary serves alone
and ``stream_infer_variant_info`` shows what is live. Settings that are wrong on
their face (a share out of range, a shadow topic that is the output topic, a
shadow topic that does not exist) stop the worker at start-up like any other.

Threads: the reload thread (``inference.reload``) loads and checks a replaced
file and calls :meth:`ModelOps.switch`, which swaps ``serving.primary`` (and
the drift monitor, the metrics, the dead letters' version) in a few
assignments; the inference thread reads ``serving`` once per batch. The shadow
runs on its own thread (``runtimes.shadow``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stream_infer.config import ModelSettings, Settings
from stream_infer.inference.agreement import AgreementMonitor
from stream_infer.inference.drift import DriftMonitor, load_baseline
from stream_infer.inference.model import Model, load_model
from stream_infer.inference.reload import Reloader
from stream_infer.inference.variants import (
    CanaryRouter,
    Role,
    Serving,
    Variant,
    incompatibility,
    version_of,
)
from stream_infer.kafka.producer import OutputProducer
from stream_infer.logging import get_logger
from stream_infer.ops.modelops import ModelOpsMetrics, VariantInfo
from stream_infer.ops.telemetry import Telemetry
from stream_infer.runtimes.shadow import ShadowStage

__all__ = ["ModelOps"]

log = get_logger("modelops")


class ModelOps:
    def __init__(
        self,
        settings: Settings,
        model: Model,
        telemetry: Telemetry,
        client_id: str,
        on_switch: Callable[[Model], None] = lambda model: None,
    ) -> None:
        s = settings
        self.settings = settings
        self._telemetry = telemetry
        self._on_switch = on_switch
        self.metrics = ModelOpsMetrics(telemetry.metrics.registry)
        telemetry.metrics.extra.append(self.metrics.collect)
        self.metrics.variants = self._variant_info
        version = version_of(model, s.model.version, s.model.version)
        if version != s.model.version:
            log.info(
                "%s declares version %s: outputs say %s (model.version %s is for files that "
                "declare none)", s.model.path, version, version, s.model.version,
            )  # fmt: skip
        primary = Variant.of("primary", model, s.model.name, version)
        telemetry.metrics.version = version
        self.serving = Serving(primary)
        canary = s.model.canary
        if canary is not None:
            self.serving.canary = self._candidate(
                "canary", canary.path, canary.name, canary.version
            )
            if self.serving.canary is not None:
                self.serving.router = CanaryRouter(canary.share)
                log.info(
                    "canary %s v%s answers %.2f%% of keys",
                    self.serving.canary.name, self.serving.canary.version, 100 * canary.share,
                )  # fmt: skip
        self.drift: DriftMonitor | None = None
        if s.drift.baseline:
            self.drift = self._drift_for(model)
            telemetry.watch_drift(lambda: self.drift)
        self.shadow: ShadowStage | None = None
        shadow = s.model.shadow
        if shadow is not None:
            variant = self._candidate("shadow", shadow.path, shadow.name, shadow.version)
            if variant is not None:
                agreement = AgreementMonitor(shadow.window_s)
                self.metrics.agreement = agreement
                producer = OutputProducer(s.kafka.producer_config(f"{client_id}-shadow"))
                self.shadow = ShadowStage(
                    variant, producer, shadow.topic, self.metrics, agreement,
                    shadow.max_queued_batches,
                )  # fmt: skip
                log.info(
                    "shadow %s v%s runs on the same rows, writing to %s",
                    variant.name, variant.version, shadow.topic,
                )  # fmt: skip
        self.reloader = Reloader(
            s.model,
            s.batching.max_batch_size,
            lambda: self.serving.primary,
            self.switch,
            check=self._drift_for if s.drift.baseline else None,
            also=[s.drift.baseline] if s.drift.baseline else [],
            on_result=self.metrics.reloaded,
            concurrent=True,
        )

    def _drift_for(self, model: Model) -> DriftMonitor:
        """The drift monitor for ``model``: its baseline must fit it (at start-up and reloads)."""
        d = self.settings.drift
        return DriftMonitor(load_baseline(d.baseline, model), d.window_s)

    def observe(self, feeds: Mapping[str, Any], outputs: Sequence[Any]) -> None:
        """Drift: a predicted batch, to whichever monitor serves now."""
        drift = self.drift
        if drift is not None:
            drift.observe(feeds, outputs)

    def _candidate(
        self, role: Role, path: str, name: str | None, version: str | None
    ) -> Variant | None:
        """A canary or shadow; None (and a warning) when it cannot serve beside the primary."""
        s = self.settings
        primary = self.serving.primary
        settings = ModelSettings.model_validate(
            {**s.model.model_dump(exclude={"shadow", "canary"}), "path": path}
        )
        try:
            model = load_model(settings, s.batching.max_batch_size, concurrent=True)
        except Exception as exc:
            log.warning("%s disabled, the primary serves alone: %s", role, exc)
            return None
        reason = incompatibility(primary.model.signature, model.signature, "any")
        if reason is not None:
            log.warning("%s disabled, the primary serves alone: %s: %s", role, path, reason)
            return None
        variant = Variant.of(role, model, name or s.model.name, version_of(model, version, role))
        if variant.version == primary.version and variant.name == primary.name:
            log.warning(
                "%s answers as %s v%s, like the primary: only the \"variant\" field tells them "
                "apart (set model.%s.version or stamp one in the file)",
                role, variant.name, variant.version, role,
            )  # fmt: skip
        return variant

    def switch(self, new: Variant, drift: Any = None) -> None:
        """Serve ``new`` from the next batch on (the reload thread calls it)."""
        if isinstance(drift, DriftMonitor):
            self.drift = drift
        self.serving.primary = new
        metrics = self._telemetry.metrics
        metrics.version = new.version
        metrics.provider = lambda: new.model.provider
        self._on_switch(new.model)

    def _variant_info(self) -> list[VariantInfo]:
        live = [self.serving.primary, self.serving.canary]
        if self.shadow is not None:
            live.append(self.shadow.variant)
        return [
            VariantInfo(v.role, v.name, v.version, v.model.provider) for v in live if v is not None
        ]

    def start(self) -> None:
        if self.shadow is not None:
            self.shadow.start()
        self.reloader.start()

    def stop(self, timeout: float) -> None:
        self.reloader.stop(min(1.0, timeout))
        if self.shadow is not None:
            self.shadow.stop(timeout)
