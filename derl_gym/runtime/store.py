"""SQLite results store: the cache of inner-loop evaluations and the meta loop's checkpoints.

One file per run directory (``<run_dir>/store.sqlite``, WAL mode). Three tables:

- ``evaluations``: one row per ``(canonical formula, spec hash, seed)`` -- the spec hash includes the
  code and library versions (:mod:`derl_gym.runtime.versions`); ``base_hash`` holds the same key
  without the versions, for ``reuse_across_versions`` look-ups -- with the formula text,
  score, status, learning curve (JSON), wall time, env steps, error, model path, extra (JSON), the
  method and iteration that first asked for it, and ``created_at``. ``attempts`` counts how many
  times the row was (re)written.
- ``checkpoints``: one row per ``(method, iteration)`` with the meta-optimizer state after that
  iteration (JSON), the proposed formulas, their canonical forms, scores, statuses and cache flags,
  and the iteration's stats (JSON).
- ``meta``: key/value run metadata (command arguments, spec JSON, the run's code and library
  ``versions``, final-test tables), JSON values.

Every write is committed at once, so a process killed with SIGKILL loses nothing it finished.

**No code runs when a store is read.** Every column is text, numbers or JSON; the optimizer state in
a checkpoint is JSON whose torch weights are safetensors buffers
(:mod:`derl_gym.agents.meta.safe_state`), and anything else in their place is refused when loaded.

**Failure policy.** Failed and timed-out results are stored (they are part of the record) but
:meth:`ResultStore.get` returns only successful results unless ``reuse_failures=True``: a failure
may be transient (a killed worker, a timeout on a busy machine), so a later run retries it. Within
one run, :class:`~derl_gym.runtime.evaluator.Evaluator` does not retry a formula that already failed
in that same session.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from derl_gym.runtime.spec import STATUS_OK, InnerResult

STORE_FILENAME = "store.sqlite"


def store_file(path: str | Path) -> Path:
    """Return the SQLite file of a store given as that file (``.sqlite``/``.db``/``.sqlite3``) or its run
    directory (then ``<dir>/store.sqlite``).

    Example:
        >>> store_file("runs/demo").as_posix(), store_file("runs/demo/results.db").as_posix()
        ('runs/demo/store.sqlite', 'runs/demo/results.db')
    """
    path = Path(path)
    return path if path.suffix in (".sqlite", ".db", ".sqlite3") else path / STORE_FILENAME

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    canonical TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    expression TEXT NOT NULL,
    score REAL NOT NULL,
    status TEXT NOT NULL,
    curve TEXT NOT NULL DEFAULT '[]',
    wall_seconds REAL NOT NULL DEFAULT 0,
    env_steps INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    model_path TEXT,
    extra TEXT NOT NULL DEFAULT '{}',
    method TEXT,
    iteration INTEGER,
    attempts INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    base_hash TEXT,
    UNIQUE (canonical, spec_hash, seed)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    method TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    state TEXT NOT NULL,
    expressions TEXT NOT NULL DEFAULT '[]',
    canonicals TEXT NOT NULL DEFAULT '[]',
    scores TEXT NOT NULL DEFAULT '[]',
    statuses TEXT NOT NULL DEFAULT '[]',
    cached TEXT NOT NULL DEFAULT '[]',
    stats TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    PRIMARY KEY (method, iteration)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""

_EVAL_COLUMNS = ("id", "canonical", "spec_hash", "seed", "expression", "score", "status", "curve", "wall_seconds",
                 "env_steps", "error", "model_path", "extra", "method", "iteration", "attempts", "created_at",
                 "base_hash")


def _json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON-serialisable."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default)


class Checkpoint(dict):
    """One row of the ``checkpoints`` table as a dict.

    Keys: ``method``, ``iteration``, ``state`` (the optimizer's state dict), ``expressions``,
    ``canonicals``, ``scores``, ``statuses``, ``cached``, ``stats`` and ``created_at``.

    Example:
        >>> import tempfile
        >>> from derl_gym.runtime.store import ResultStore
        >>> with tempfile.TemporaryDirectory() as run_dir, ResultStore(run_dir) as store:
        ...     store.save_checkpoint("derl", 0, {"step": 1}, expressions=["g1"], canonicals=["g1"], scores=[0.5])
        ...     checkpoint = store.latest_checkpoint("derl")
        >>> type(checkpoint).__name__, checkpoint["iteration"], checkpoint["state"], checkpoint["scores"]
        ('Checkpoint', 0, {'step': 1}, [0.5])
    """


class ResultStore:
    """The SQLite store of one run directory (see the module docstring for tables and policy).

    Thread-safe: one connection guarded by a lock. Use it as a context manager or call :meth:`close`.

    Args:
        path: the SQLite file (``.sqlite``/``.db``/``.sqlite3``) or a directory, then
            ``<dir>/store.sqlite`` (created if missing).
        reuse_failures: :meth:`get` also returns failed/timed-out results (default: only ``ok`` ones).

    Example:
        >>> import tempfile
        >>> from derl_gym.runtime.spec import InnerResult
        >>> from derl_gym.runtime.store import ResultStore
        >>> with tempfile.TemporaryDirectory() as run_dir, ResultStore(run_dir) as store:
        ...     _ = store.put(InnerResult("g1+g2", "g1 + g2", score=0.7, seed=0), "spec0123", method="derl")
        ...     _ = store.put(InnerResult.failure("g1/g3", "g1/g3", "timeout", seed=0), "spec0123")
        ...     hit = store.get("g1 + g2", "spec0123", seed=0)
        ...     failure = store.get("g1/g3", "spec0123", seed=0)  # failures are retried, not reused
        ...     hit.score, failure, store.count("spec0123"), store.path.name
        (0.7, None, 2, 'store.sqlite')
    """

    def __init__(self, path: str | Path, *, reuse_failures: bool = False) -> None:
        path = store_file(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.reuse_failures = reuse_failures
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(evaluations)")}
            if "base_hash" not in columns:  # a store written before versions entered the key
                self._conn.execute("ALTER TABLE evaluations ADD COLUMN base_hash TEXT")
            self._conn.execute("CREATE INDEX IF NOT EXISTS evaluations_base ON evaluations (base_hash, canonical, seed)")

    # ------------------------------------------------------------------ evaluations
    def get(self, canonical: str, spec_hash: str, seed: int, *, reuse_failures: bool | None = None,
            base_hash: str | None = None) -> InnerResult | None:
        """Return the stored result for ``(canonical, spec_hash, seed)``, or None.

        A stored failure is returned only with ``reuse_failures=True`` (argument, or the store's
        default): otherwise None, so that the caller retries it. With ``base_hash`` (the
        version-free key, ``reuse_across_versions``) a row stored under any code/library versions
        of that spec also answers -- one with ``base_hash`` equal to it, or a row written before
        versions entered the key, whose ``spec_hash`` is the version-free hash; a row of the exact
        ``spec_hash`` is preferred, then a success, then the newest.
        """
        row = self._row(canonical, spec_hash, seed)
        if base_hash is not None and (row is None or row["status"] != STATUS_OK):
            other = self._row_any_version(canonical, spec_hash, base_hash, seed)
            if other is not None and (row is None or other["status"] == STATUS_OK):
                row = other
        if row is None:
            return None
        reuse = self.reuse_failures if reuse_failures is None else reuse_failures
        if row["status"] != STATUS_OK and not reuse:
            return None
        return self._to_result(row)

    def get_row(self, canonical: str, spec_hash: str, seed: int) -> dict[str, Any] | None:
        """Return the raw stored row (all columns, JSON decoded) or None."""
        row = self._row(canonical, spec_hash, seed)
        return None if row is None else self._decode(row)

    def _row(self, canonical: str, spec_hash: str, seed: int) -> sqlite3.Row | None:
        with self._lock:
            cur = self._conn.execute(
                "SELECT * FROM evaluations WHERE canonical=? AND spec_hash=? AND seed=?",
                (canonical, spec_hash, int(seed)))
            return cur.fetchone()

    def _row_any_version(self, canonical: str, spec_hash: str, base_hash: str, seed: int) -> sqlite3.Row | None:
        with self._lock:
            cur = self._conn.execute(
                """SELECT * FROM evaluations WHERE canonical=? AND seed=? AND (spec_hash=? OR base_hash=? OR spec_hash=?)
                   ORDER BY (spec_hash=?) DESC, (status=?) DESC, id DESC LIMIT 1""",
                (canonical, int(seed), spec_hash, base_hash, base_hash, spec_hash, STATUS_OK))
            return cur.fetchone()

    def put(self, result: InnerResult, spec_hash: str, *, method: str | None = None,
            iteration: int | None = None, seed: int | None = None, base_hash: str | None = None) -> int:
        """Store ``result`` (committed at once); returns the row id.

        The key is ``(result.canonical, spec_hash, seed or result.seed)``; ``base_hash`` is the
        version-free key (see :meth:`get`), kept alongside. An existing row is
        replaced (a retried failure overwrites the failure; ``attempts`` is incremented), but a
        successful row is never overwritten by a failure. ``method``/``iteration`` of the first
        writer are kept.
        """
        seed = int(result.seed if seed is None else seed)
        values = (result.canonical, spec_hash, seed, result.expression, float(result.score), result.status,
                  _dumps([list(p) for p in result.curve]), float(result.wall_seconds), int(result.env_steps),
                  result.error, result.model_path, _dumps(result.extra or {}), method, iteration, time.time(),
                  base_hash)
        with self._lock:
            existing = self._row(result.canonical, spec_hash, seed)
            if existing is not None and existing["status"] == STATUS_OK and not result.ok:
                return int(existing["id"])
            cur = self._conn.execute(
                """INSERT INTO evaluations (canonical, spec_hash, seed, expression, score, status, curve,
                       wall_seconds, env_steps, error, model_path, extra, method, iteration, created_at, base_hash)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (canonical, spec_hash, seed) DO UPDATE SET
                       expression=excluded.expression, score=excluded.score, status=excluded.status,
                       curve=excluded.curve, wall_seconds=excluded.wall_seconds, env_steps=excluded.env_steps,
                       error=excluded.error, model_path=excluded.model_path, extra=excluded.extra,
                       attempts=evaluations.attempts + 1, created_at=excluded.created_at,
                       base_hash=COALESCE(excluded.base_hash, evaluations.base_hash)
                   RETURNING id""", values)
            row = cur.fetchone()
            return int(row[0])

    def results(self, spec_hash: str | None = None, *, status: str | None = None) -> list[InnerResult]:
        """Return stored results (all, or those of one spec hash / status), oldest first."""
        return [self._to_result(row) for row in self._select(spec_hash, status)]

    def rows(self, spec_hash: str | None = None, *, status: str | None = None) -> list[dict[str, Any]]:
        """Return stored evaluation rows as dicts (JSON columns decoded), oldest first."""
        return [self._decode(row) for row in self._select(spec_hash, status)]

    def _select(self, spec_hash: str | None, status: str | None) -> list[sqlite3.Row]:
        query, args = "SELECT * FROM evaluations", []
        where = []
        if spec_hash is not None:
            where.append("spec_hash=?")
            args.append(spec_hash)
        if status is not None:
            where.append("status=?")
            args.append(status)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id"
        with self._lock:
            return list(self._conn.execute(query, args).fetchall())

    def count(self, spec_hash: str | None = None) -> int:
        """Return the number of stored evaluations (optionally of one spec hash)."""
        return len(self._select(spec_hash, None))

    @staticmethod
    def _decode(row: sqlite3.Row) -> dict[str, Any]:
        data = {key: row[key] for key in row.keys()}
        data["curve"] = [tuple(p) for p in json.loads(data["curve"] or "[]")]
        data["extra"] = json.loads(data["extra"] or "{}")
        return data

    @classmethod
    def _to_result(cls, row: sqlite3.Row) -> InnerResult:
        data = cls._decode(row)
        return InnerResult(expression=data["expression"], canonical=data["canonical"], score=float(data["score"]),
                           status=data["status"], seed=int(data["seed"]), curve=data["curve"],
                           wall_seconds=float(data["wall_seconds"]), env_steps=int(data["env_steps"]),
                           error=data["error"], model_path=data["model_path"], extra=data["extra"])

    def import_evaluations(self, source: str | Path) -> int:
        """Copy every evaluation row of another store into this one; returns the number of rows added.

        A row whose ``(canonical, spec_hash, seed)`` is already here is kept as it is. Checkpoints and
        metadata are not copied, so a search in this store starts afresh (under another selection score,
        say) while the imported trainings answer its look-ups as cache hits. The source is only read;
        its rows are data (JSON and numbers), so nothing in it can execute. Imported rows keep their
        ``model_path``, which points into the source's run directory.

        Example:
            >>> import tempfile
            >>> from derl_gym.runtime.spec import InnerResult
            >>> with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            ...     with ResultStore(a) as old:
            ...         _ = old.put(InnerResult("g1", "g1", score=0.7, seed=0), "spec0123", method="derl")
            ...         old.save_checkpoint("derl", 1, {"step": 1})
            ...     with ResultStore(b) as new:
            ...         added, again = new.import_evaluations(a), new.import_evaluations(a)
            ...         added, again, new.get("g1", "spec0123", 0).score, new.methods()
            (1, 0, 0.7, [])
        """
        path = store_file(source)
        if not path.is_file():
            raise FileNotFoundError(f"no result store at {path}")
        if path.resolve() == self.path.resolve():
            raise ValueError(f"cannot import the store {path} into itself")
        # query_only rather than a read-only open: the last connection to close then removes a WAL
        # store's -wal/-shm files instead of leaving them beside the source
        src = sqlite3.connect(str(path), timeout=30)
        src.row_factory = sqlite3.Row
        try:
            src.execute("PRAGMA query_only=ON")
            rows = src.execute("SELECT * FROM evaluations ORDER BY id").fetchall()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{path} is not a derl-gym result store: {exc}") from exc
        finally:
            src.close()
        added = 0
        with self._lock:
            columns = [r[1] for r in self._conn.execute("PRAGMA table_info(evaluations)") if r[1] != "id"]
            self._conn.execute("BEGIN")
            try:
                for row in rows:
                    keys = [c for c in columns if c in row.keys()]
                    cur = self._conn.execute(
                        f"INSERT OR IGNORE INTO evaluations ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
                        [row[k] for k in keys])
                    added += cur.rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return added

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, method: str, iteration: int, state: dict[str, Any], *,
                        expressions: list[str] = (), canonicals: list[str] = (), scores: list[float] = (),
                        statuses: list[str] = (), cached: list[bool] = (), stats: dict[str, Any] | None = None) -> None:
        """Store the optimizer state after ``iteration`` of ``method`` and what it evaluated
        (committed at once; replaces an existing row for the same method and iteration)."""
        with self._lock:
            self._conn.execute(
                """INSERT OR REPLACE INTO checkpoints (method, iteration, state, expressions, canonicals, scores,
                       statuses, cached, stats, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (method, int(iteration), _dumps(state), _dumps(list(expressions)), _dumps(list(canonicals)),
                 _dumps([float(s) for s in scores]), _dumps(list(statuses)), _dumps([bool(c) for c in cached]),
                 _dumps(stats or {}), time.time()))

    def latest_checkpoint(self, method: str) -> Checkpoint | None:
        """Return the checkpoint of ``method`` with the highest iteration, or None."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM checkpoints WHERE method=? ORDER BY iteration DESC LIMIT 1",
                                     (method,)).fetchone()
        return None if row is None else self._checkpoint(row)

    def checkpoints(self, method: str | None = None) -> list[Checkpoint]:
        """Return all checkpoints (of one method, or all), ordered by method then iteration."""
        with self._lock:
            if method is None:
                rows = self._conn.execute("SELECT * FROM checkpoints ORDER BY method, iteration").fetchall()
            else:
                rows = self._conn.execute("SELECT * FROM checkpoints WHERE method=? ORDER BY iteration",
                                          (method,)).fetchall()
        return [self._checkpoint(row) for row in rows]

    def methods(self) -> list[str]:
        """Return the method labels that have checkpoints, in order of first appearance."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT method, MIN(created_at) AS t FROM checkpoints GROUP BY method ORDER BY t").fetchall()
        return [row["method"] for row in rows]

    @staticmethod
    def _checkpoint(row: sqlite3.Row) -> Checkpoint:
        out = Checkpoint(method=row["method"], iteration=int(row["iteration"]), created_at=row["created_at"])
        for key in ("state", "expressions", "canonicals", "scores", "statuses", "cached", "stats"):
            out[key] = json.loads(row[key])
        return out

    # ------------------------------------------------------------------ run metadata
    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable run-metadata value under ``key`` (committed at once)."""
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value, updated_at) VALUES (?, ?, ?)",
                               (key, _dumps(value), time.time()))

    def get_meta(self, key: str, default: Any = None) -> Any:
        """Return the run-metadata value stored under ``key`` (``default`` when missing)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    def meta(self) -> dict[str, Any]:
        """Return all run metadata as a dict."""
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
        return {row["key"]: json.loads(row["value"]) for row in rows}

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __iter__(self) -> Iterator[InnerResult]:
        return iter(self.results())

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"
