"""The one composition root: settings in, wired adapters and services out.

Entry points (CLI, functions, jobs) call :func:`bootstrap`; tests pass fakes instead
(``bootstrap(settings, bus=InProcessBus(), store=LocalObjectStore(tmp))``). Nothing here
connects or loads anything until first use, so cold starts stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stocktrade.config import Settings, get_settings

if TYPE_CHECKING:
    import psycopg

    from stocktrade.adapters.postgres.bars import PostgresBarRepository
    from stocktrade.ports import EventBus, JobLauncher, Mirror, ObjectStore, RunRepository
    from stocktrade.services.backtest_runs import BacktestEngine
    from stocktrade.services.delivery import DeliveryService
    from stocktrade.services.predict import PolicyPredictor
    from stocktrade.services.promotion import ModelRegistry
    from stocktrade.services.training import TrainingDeps


@dataclass
class Container:
    """Lazily created adapters for one process (one Cloud Function instance, one job)."""

    settings: Settings
    overrides: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    def _get(self, name: str, factory: Any) -> Any:
        if name in self.overrides:
            return self.overrides[name]
        if name not in self._cache:
            self._cache[name] = factory()
        return self._cache[name]

    def db(self) -> psycopg.Connection:
        """A migrated autocommit connection, created once per process and reconnected if closed."""
        from stocktrade.adapters.postgres.db import connect

        conn = self._get("db", lambda: connect(self.settings, autocommit=True))
        if conn.closed and "db" not in self.overrides:
            conn = self._cache["db"] = connect(self.settings, autocommit=True)
        return conn  # type: ignore[no-any-return]

    def bars(self) -> PostgresBarRepository:
        from stocktrade.adapters.postgres.bars import PostgresBarRepository

        return PostgresBarRepository(self.db())

    def store(self) -> ObjectStore:
        """The object store of ``object_store_url`` (local folder or GCS), created once."""
        from stocktrade.adapters.object_store import open_object_store

        return self._get("store", lambda: open_object_store(settings=self.settings))  # type: ignore[no-any-return]

    def runs(self) -> RunRepository:
        """The run repository (Postgres) on this process's connection."""
        if "runs" in self.overrides:
            return self.overrides["runs"]  # type: ignore[no-any-return]
        from stocktrade.adapters.postgres.runs import PostgresRunRepository

        return PostgresRunRepository(self.db())

    def job_launcher(self) -> JobLauncher:
        """Cloud Run Jobs (``job_launcher=cloudrun``) or local subprocesses running the same
        entry points, which reach this process's database and object store."""

        def make() -> JobLauncher:
            if self.settings.job_launcher == "cloudrun":
                from stocktrade.adapters.gcp.run_jobs import CloudRunJobLauncher

                return CloudRunJobLauncher(self.settings.gcp_project, self.settings.gcp_region)
            from stocktrade.adapters.local.launcher import SubprocessJobLauncher
            from stocktrade.adapters.postgres.db import database_url

            env = {
                "DATABASE_URL": database_url(self.settings),
                "STOCKTRADE_OBJECT_STORE_URL": self.settings.resolved_object_store_url,
                "STOCKTRADE_DATA_DIR": str(self.settings.data_dir),
                "STOCKTRADE_ENV": self.settings.env,
            }
            return SubprocessJobLauncher(self.store(), env=env)

        return self._get("job_launcher", make)  # type: ignore[no-any-return]

    def backtest_engine(self) -> BacktestEngine:
        """The backtest engine (:func:`stocktrade.backtest.engine.run_backtest`)."""
        if "backtest_engine" in self.overrides:
            return self.overrides["backtest_engine"]  # type: ignore[no-any-return]
        from stocktrade.backtest.engine import run_backtest

        return run_backtest

    def bus(self) -> EventBus:
        """Pub/Sub (``bus=pubsub``) or the in-process bus, created once per process.

        The in-process bus starts with no subscribers; local runners wire the chain with
        ``stocktrade.services.chain.subscribe(container.bus(), container.delivery())``.
        """

        def make() -> EventBus:
            if self.settings.bus == "pubsub":
                from stocktrade.adapters.gcp.pubsub import PubSubEventBus

                return PubSubEventBus.from_settings(self.settings)
            from stocktrade.adapters.local.bus import InProcessEventBus

            return InProcessEventBus()

        return self._get("bus", make)  # type: ignore[no-any-return]

    def mirror(self) -> Mirror:
        """The realtime mirror of ``settings.mirror``: off, in memory, or Firestore."""

        def make() -> Mirror:
            from stocktrade.adapters.local.mirror import InMemoryMirror, NullMirror

            if self.settings.mirror == "memory":
                return InMemoryMirror()
            if self.settings.mirror == "firestore":
                from stocktrade.adapters.gcp.firestore_mirror import FirestoreMirror

                return FirestoreMirror.from_settings(self.settings)
            return NullMirror()

        return self._get("mirror", make)  # type: ignore[no-any-return]

    def delivery(self) -> DeliveryService:
        """Idempotent handling + outbox relay on this process's connection, bus and mirror."""

        def make() -> DeliveryService:
            from stocktrade.adapters.postgres.delivery import PostgresDeliveryStore
            from stocktrade.services.delivery import DeliveryService

            return DeliveryService(PostgresDeliveryStore(self.db), self.bus(),
                                   mirror=self.mirror(), deps=self)

        return self._get("delivery", make)  # type: ignore[no-any-return]

    def predictor(self) -> PolicyPredictor:
        """ONNX Runtime (CPU) policies from ``model_versions``, loaded once per instance."""

        def make() -> PolicyPredictor:
            from stocktrade.adapters.inference.onnx_runtime import OnnxPolicyRuntime
            from stocktrade.adapters.postgres.policies import PostgresPolicySource
            from stocktrade.services.predict import PolicyPredictor

            source = PostgresPolicySource(self.db, self.store, self.settings)
            return PolicyPredictor(source.find, source.read, OnnxPolicyRuntime)

        return self._get("predictor", make)  # type: ignore[no-any-return]

    def models(self) -> ModelRegistry:
        """The model registry (Postgres ``model_versions``) on this process's connection."""
        if "models" in self.overrides:
            return self.overrides["models"]  # type: ignore[no-any-return]
        from stocktrade.adapters.postgres.models import PostgresModelRegistry

        return PostgresModelRegistry(self.db())

    def training(self, *, relay: bool | None = None) -> TrainingDeps:
        """What a training run needs: repositories, store, registry, the torch trainer and
        policy strategy (:mod:`stocktrade.rl.pipeline`, imported when training starts), the
        backtest engine, and the outbox relay that publishes ``ModelPromoted``.

        ``relay=None`` relays when a bus is wired: Pub/Sub, or an in-process bus this process
        already created or was given (it has subscribers). Otherwise the event stays in the
        outbox for whichever process consumes it (the local chain worker, ``cron_relay``):
        relaying into an in-process bus nobody listens to would mark it published and lose it.
        """
        from stocktrade.services.training import TrainingDeps

        if relay is None:
            relay = (
                self.settings.bus == "pubsub" or "bus" in self.overrides or "bus" in self._cache
            )

        def trainer(*args: Any, **kwargs: Any) -> Any:
            from stocktrade.rl.pipeline import train_policy

            return train_policy(*args, **kwargs)

        def policy_factory(onnx: bytes, manifest: Any) -> Any:
            from stocktrade.rl.pipeline import policy_strategy

            return policy_strategy(onnx, manifest)

        return TrainingDeps(
            runs=self.runs(),
            bars=self.bars(),
            store=self.store(),
            models=self.models(),
            trainer=self.overrides.get("trainer", trainer),
            policy_factory=self.overrides.get("policy_factory", policy_factory),
            engine=self.backtest_engine(),
            relay=(lambda: self.delivery().relay_all()) if relay else None,
            torch_threads=self.settings.torch_threads,
        )

    def close(self) -> None:
        conn = self._cache.pop("db", None)
        if conn is not None:
            conn.close()


def bootstrap(settings: Settings | None = None, **overrides: Any) -> Container:
    """Wire adapters from settings; keyword arguments replace individual adapters."""
    return Container(settings or get_settings(), overrides)
