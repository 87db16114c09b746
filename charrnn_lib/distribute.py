"""Scaling up: the devices, strategies and row bookkeeping that let training run anywhere.

TensorFlow's ``tf.distribute`` engine runs the same Python training step under a
*strategy*.  The default strategy is one device.  ``MirroredStrategy`` keeps one copy
(a *replica*) of every variable on each of several devices -- the GPUs of a machine, or,
for testing, logical devices carved out of one CPU by ``split_cpu`` -- gives each replica
a slice of the global batch, and sums the gradients across replicas (an *all-reduce*)
so that every copy takes the same update.  ``TPUStrategy`` does the same on TPU cores.
This is data parallelism: the batch is split, the model is not.

char-rnn adds one twist: the recurrent state.  ``make_batches`` lays the corpus out so
that row ``r`` of batch ``b + 1`` continues row ``r`` of batch ``b``, and training carries
the state of each row from one batch to the next.  With ``R`` replicas and a global batch
of ``B`` rows, replica ``i`` always receives rows ``i * B/R`` to ``(i + 1) * B/R - 1``
(``split_rows``), so the state each replica returns belongs to exactly the rows it will
receive next; ``gather_rows`` puts the slices back together in row order, which is what a
checkpoint stores, so a run saved under one strategy resumes under another.

The step itself is ``charrnn_lib.train.make_train_step`` (this module does not import it):
each replica's loss is the mean over its ``B/R`` rows divided by ``R`` (what ``tf.nn.compute_average_loss`` does), so that
the replicas' gradients *sum* to the gradient of the mean over all ``B`` rows -- the number
one device computes.  Clipping by global norm needs the norm of that sum, so the step
all-reduces the gradients first, scales each replica's own by the common factor and lets
the optimizer sum them (clipping each replica's gradient by its own norm would be a
different rule, one that changes with the number of replicas).

Dropout under a multi-replica strategy: every replica holds a copy of each dropout layer's
random-number state, the copies start equal and advance together, so the replicas draw the
same mask pattern for their different rows.  Training is still correct, and since the
copies stay equal the one a checkpoint saves is every replica's; but it is not the
one-device run, which draws one mask for all ``B`` rows.  The equivalence tests therefore
use models without dropout.

Several processes, or machines: ``make_strategy("multi-worker")`` is TensorFlow's
``MultiWorkerMirroredStrategy``.  Every *worker* is a process that runs the same training
script; TensorFlow learns the cluster from ``TF_CONFIG``, a JSON object naming every
worker's ``host:port`` (``cluster``) and this process's place among them (``task``)
(``Cluster`` parses and checks it).  The replicas of all workers are numbered in one
sequence, the chief's first, and ``split_rows`` gives replica ``i`` the same rows as above;
but each process holds only its own replicas' slices, so putting the state back together
(``gather_rows``, for a checkpoint) is a collective operation that every worker must call.
So is every other cross-worker agreement (``exchange``, ``any_worker``): collective
operations pair up by the order in which each worker calls them, so every worker must
call the same ones in the same order, and ``charrnn_lib.train`` is written so that they do.
Only the chief (worker 0) writes checkpoints; the others read the same folder.

Also here: the cuDNN eligibility check of a built model (``cudnn_blockers``).  The named
recipes are ``charrnn_lib.config.PRESETS``; throughput is measured by ``charrnn_lib.bench``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import weakref
from typing import Sequence

from charrnn_lib.config import STRATEGIES

__all__ = [
    "Cluster",
    "ClusterConfigError",
    "DevicesAlreadyInitializedError",
    "WorkerFailedError",
    "WorkersDisagreeError",
    "any_worker",
    "cudnn_blockers",
    "exchange",
    "gather_rows",
    "is_chief",
    "make_strategy",
    "per_replica_batch_size",
    "spans_processes",
    "split_cpu",
    "split_rows",
]


class DevicesAlreadyInitializedError(RuntimeError):
    """TensorFlow's devices were set up before ``split_cpu`` could change them."""


# --------------------------------------------------------------------------- devices


def split_cpu(n: int) -> list[str]:
    """Split the first physical CPU into ``n`` logical devices; return their names.

    Must run before anything initialises TensorFlow's devices (creating a tensor, a
    model or a strategy does): call it first thing in a script, test or notebook.
    Calling it again with the same ``n`` is harmless.  The logical devices share the
    same cores, so this is for *testing* multi-device code, not for speed.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        current = tf.config.list_logical_devices("CPU")
        if len(current) == n:  # already split this way
            return [d.name for d in current]
        raise DevicesAlreadyInitializedError(
            f"TensorFlow's devices are already initialised ({len(current)} logical CPU "
            f"device(s)), so the CPU can no longer be split into {n}. Call split_cpu({n}) "
            "before any other TensorFlow work -- first thing in the script or notebook, "
            "or in a fresh subprocess."
        ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(name: str = "auto", devices: Sequence[str] | None = None, cluster=None):
    """A ``tf.distribute.Strategy`` by name.

    ``"default"``: the default strategy (one device; ``devices``, if given, must name one
    device and gives a ``OneDeviceStrategy`` on it).  ``"mirrored"``: ``MirroredStrategy``
    on ``devices`` (default: every GPU; without GPUs, every logical CPU device -- one
    unless ``split_cpu`` made more).  ``"auto"``: mirrored when ``devices`` names several or
    the machine has more than one GPU, else default.  ``"multi-worker"``:
    ``MultiWorkerMirroredStrategy`` over the workers of ``cluster`` -- a ``Cluster``, a
    ``TF_CONFIG`` dict or its JSON text, or ``None`` to read the ``TF_CONFIG`` environment
    variable as TensorFlow does -- with each worker's GPUs (without GPUs, its CPU) as its
    replicas.  For TPUs build ``tf.distribute.TPUStrategy`` yourself and pass it to
    ``train``: the training code only uses the ``Strategy`` interface.

    Asked twice for the same mirrored devices, it returns the same strategy object: two
    ``MirroredStrategy`` objects over the same devices in one process number their
    collective operations independently, and their all-reduces can then be paired up
    wrongly ("Shape mismatch in the collective instance").  The multi-worker strategy
    starts this process's gRPC server and configures TensorFlow's collective operations,
    which only works before anything else has started TensorFlow (as for ``split_cpu``),
    and only once per process: ask for it first thing, and the same object comes back
    when asked again.  Creating it waits until every worker of the cluster has started.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "multi-worker":
        if devices is not None:
            raise ValueError("the multi-worker strategy uses each worker's own GPUs (or its CPU); "
                             "it takes no devices")
        return _multi_worker_strategy(_as_cluster(cluster))
    if cluster is not None:
        raise ValueError(f"cluster= is for strategy='multi-worker', not {name!r}")
    import tensorflow as tf

    devices = list(devices) if devices is not None else None
    if name == "auto":
        many = len(devices) > 1 if devices else len(tf.config.list_logical_devices("GPU")) > 1
        name = "mirrored" if many else "default"
    if name == "mirrored":
        if devices is None:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]  # see split_cpu
        key = tuple(tf.DeviceSpec.from_string(d).to_string() for d in devices)
        if key not in _MIRRORED:
            _MIRRORED[key] = tf.distribute.MirroredStrategy(devices)
        return _MIRRORED[key]
    if devices:
        if len(devices) != 1:
            raise ValueError(f"the default strategy runs on one device; got {devices}. "
                             "Use strategy='mirrored' for several.")
        return tf.distribute.OneDeviceStrategy(devices[0])
    return tf.distribute.get_strategy()


_MIRRORED: dict = {}  # device names -> the MirroredStrategy over them (see make_strategy)


# --------------------------------------------------------------------------- several workers


class ClusterConfigError(ValueError):
    """``TF_CONFIG`` (or ``--workers`` and ``--worker-index``) does not describe a usable cluster."""


class WorkersDisagreeError(ValueError):
    """The workers of one run were started with different settings, or see different checkpoints."""


class WorkerFailedError(RuntimeError):
    """Another worker failed at a step where every worker must take part; it reports why."""


# "host:port": a host name or IPv4 address, or an IPv6 address in brackets, and a port.
_ADDRESS = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?):([0-9]{1,5})")
_JOBS = ("chief", "worker")   # the task types of a MultiWorkerMirroredStrategy cluster, chief first


def _check_address(text: str) -> str:
    """``text`` if it is a worker address, ``host:port``; a ``ClusterConfigError`` otherwise."""
    match = _ADDRESS.fullmatch(text) if isinstance(text, str) else None
    if match is None or not 1 <= int(match[1]) <= 65535:
        raise ClusterConfigError(f"{text!r} is not a worker address: write host:port with a port from 1 to "
                                 f"65535, e.g. 127.0.0.1:23456 or node1.example.org:23456")
    return text


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The workers of a multi-worker run and this process's place among them: ``TF_CONFIG``.

    ``jobs``: ``(task type, addresses)`` pairs, a ``"chief"`` job of one address first if
    there is one, then the ``"worker"`` job.  ``task_type`` and ``task_index`` say which of
    those addresses is this process.  The chief -- the ``"chief"`` task, or worker 0 when
    there is none -- writes the checkpoints; its replicas come first in the row order.
    """

    jobs: tuple
    task_type: str
    task_index: int

    @classmethod
    def from_workers(cls, workers: str, index: int) -> "Cluster":
        """From a comma-separated list of ``host:port`` (worker 0, the chief, first) and an index."""
        addresses = [a.strip() for a in str(workers).split(",")]
        for address in addresses:
            _check_address(address)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(addresses):
            raise ClusterConfigError(f"worker index {index!r} is not one of the {len(addresses)} workers: use "
                                     f"0 to {len(addresses) - 1} (0 is the chief)")
        return cls._checked({"worker": addresses}, "worker", index)

    @classmethod
    def from_tf_config(cls, text) -> "Cluster":
        """From ``TF_CONFIG``'s JSON text (or the object it encodes)."""
        if isinstance(text, str):
            try:
                text = json.loads(text)
            except ValueError as exc:
                raise ClusterConfigError(f"TF_CONFIG is not JSON ({exc}); it should look like "
                                         f"{json.dumps(_EXAMPLE)}") from None
        config = text
        if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) \
                or not isinstance(config.get("task"), dict):
            raise ClusterConfigError(f"TF_CONFIG needs a 'cluster' and a 'task' object, as in {json.dumps(_EXAMPLE)}")
        cluster, task = config["cluster"], config["task"]
        other = sorted(set(cluster) - set(_JOBS))
        if other:
            raise ClusterConfigError(f"TF_CONFIG's cluster has {', '.join(map(repr, other))} tasks; a "
                                     f"MultiWorkerMirroredStrategy cluster has only 'chief' and 'worker' tasks")
        for job, addresses in cluster.items():
            if not isinstance(addresses, list) or not addresses:
                raise ClusterConfigError(f"TF_CONFIG's cluster[{job!r}] must be a non-empty list of host:port")
            for address in addresses:
                _check_address(address)
        if len(cluster.get("chief", [])) > 1:
            raise ClusterConfigError("TF_CONFIG's cluster has more than one 'chief': name one at most")
        return cls._checked(cluster, task.get("type"), task.get("index"))

    @classmethod
    def _checked(cls, cluster: dict, task_type, task_index) -> "Cluster":
        if not isinstance(task_type, str) or task_type not in cluster:
            raise ClusterConfigError(f"TF_CONFIG's task type {task_type!r} is not in its cluster "
                                     f"({', '.join(map(repr, cluster))})")
        count = len(cluster[task_type])
        if isinstance(task_index, bool) or not isinstance(task_index, int) or not 0 <= task_index < count:
            raise ClusterConfigError(f"TF_CONFIG's task index {task_index!r} is out of range: the cluster has "
                                     f"{count} {task_type!r} task(s), numbered 0 to {count - 1}")
        everyone = [a for job in _JOBS for a in cluster.get(job, [])]
        repeated = sorted({a for a in everyone if everyone.count(a) > 1})
        if repeated:
            raise ClusterConfigError(f"{', '.join(repeated)} is given to more than one worker: every worker "
                                     f"needs an address of its own")
        jobs = tuple((job, tuple(cluster[job])) for job in _JOBS if job in cluster)
        return cls(jobs, task_type, task_index)

    @property
    def num_workers(self) -> int:
        return sum(len(addresses) for _, addresses in self.jobs)

    @property
    def position(self) -> int:
        """This process's place among all workers, the chief's 0: the order of their replicas."""
        order = [(job, i) for job, addresses in self.jobs for i in range(len(addresses))]
        return order.index((self.task_type, self.task_index))

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (self.task_type == "worker" and self.task_index == 0
                                             and "chief" not in dict(self.jobs))

    @property
    def address(self) -> str:
        """This process's own ``host:port``."""
        return dict(self.jobs)[self.task_type][self.task_index]

    @property
    def tf_config(self) -> dict:
        """The ``TF_CONFIG`` object that says the same."""
        return {"cluster": {job: list(addresses) for job, addresses in self.jobs},
                "task": {"type": self.task_type, "index": self.task_index}}


_EXAMPLE = {"cluster": {"worker": ["127.0.0.1:23456", "127.0.0.1:23457"]}, "task": {"type": "worker", "index": 0}}


def _as_cluster(cluster) -> Cluster:
    if isinstance(cluster, Cluster):
        return cluster
    if cluster is None:
        text = os.environ.get("TF_CONFIG")
        if not text:
            raise ClusterConfigError("the multi-worker strategy needs the cluster: set TF_CONFIG, e.g. "
                                     f"TF_CONFIG='{json.dumps(_EXAMPLE)}', or pass cluster=")
        return Cluster.from_tf_config(text)
    return Cluster.from_tf_config(cluster)


_MULTI_WORKER: dict = {}  # the one MultiWorkerMirroredStrategy of this process, by its cluster


def _multi_worker_strategy(cluster: Cluster):
    if _MULTI_WORKER:
        (joined, strategy), = _MULTI_WORKER.items()
        if joined != cluster:
            raise ValueError(f"this process has already joined a cluster as {joined.task_type} "
                             f"{joined.task_index} of {joined.tf_config['cluster']}; a process joins one cluster")
        return strategy
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster.tf_config["cluster"]), task_type=cluster.task_type,
        task_id=cluster.task_index, rpc_layer="grpc")
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except RuntimeError as exc:
        if "program startup" not in str(exc):
            raise
        raise DevicesAlreadyInitializedError(
            "TensorFlow has already started in this process, so it can no longer join a cluster: create "
            "the multi-worker strategy before any other TensorFlow work -- first thing in the script, or "
            "in a fresh subprocess") from None
    _MULTI_WORKER[cluster] = strategy
    return strategy


def spans_processes(strategy) -> bool:
    """Whether some of ``strategy``'s replicas live in other processes (a multi-worker run)."""
    return _local_replicas(strategy) < strategy.num_replicas_in_sync


def is_chief(strategy) -> bool:
    """Whether this process writes the run's checkpoints: always, except on the non-chief
    workers of a multi-worker run (``StrategyExtended.should_checkpoint``)."""
    return bool(strategy.extended.should_checkpoint)


def _local_replicas(strategy) -> int:
    try:  # one device per local replica (Mirrored, OneDevice, MultiWorker, TPU)
        return len(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has none: one replica, here
        return 1


def exchange(strategy, values: Sequence[float]) -> list[list[float]]:
    """Every worker's ``values``, in worker order (the chief's first): an all-gather.

    ``values``: a few numbers (float64: integers up to 2**53 come back exactly).  Under
    a multi-worker strategy this is a collective operation, which every worker must call
    at the same point of its program; elsewhere it returns ``[values]`` at once.  It is how
    the workers agree on what to do next: each one decides from the same table.
    """
    values = [float(v) for v in values]
    if not spans_processes(strategy):
        return [values]
    import tensorflow as tf

    local = _local_replicas(strategy)
    workers = strategy.num_replicas_in_sync // local

    def contribution(context):  # a (workers, k) table, zero but for this worker's row
        i = context.replica_id_in_sync_group        # replicas are numbered worker by worker
        mine = values if i % local == 0 else [0.0] * len(values)   # once per worker
        return tf.one_hot(i // local, workers, dtype=tf.float64)[:, None] * tf.constant([mine], tf.float64)

    table = strategy.reduce("SUM", strategy.experimental_distribute_values_from_function(contribution), axis=None)
    return table.numpy().tolist()


def any_worker(strategy, *flags: bool) -> tuple[bool, ...]:
    """Each flag, true on every worker if it is true on any (one ``exchange``)."""
    table = exchange(strategy, [bool(f) for f in flags])
    return tuple(any(row[j] for row in table) for j in range(len(flags)))


# --------------------------------------------------------------------------- rows and replicas


def per_replica_batch_size(strategy, global_batch_size: int) -> int:
    """Rows per replica, ``B / R``; a clear error when ``B`` does not divide evenly."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"batch_size={global_batch_size} does not split evenly over {replicas} replicas; "
            f"use a multiple of {replicas}, e.g. {replicas * max(1, global_batch_size // replicas)}."
        )
    return global_batch_size // replicas


def split_rows(strategy, values):
    """Distribute arrays (or a list of them) by rows: replica ``i`` gets rows
    ``i*b : (i+1)*b`` of each, ``b = B / R``.  Every array is ``(B, ...)``.

    The same rows go to the same replica every time, which is what carrying the
    recurrent state from batch to batch needs.  Under the default strategy the values
    come back unchanged (as tensors).  Under a multi-worker strategy every process holds
    the whole arrays and keeps only its own replicas' rows.
    """
    import tensorflow as tf

    single = not isinstance(values, (list, tuple))
    items = [values] if single else list(values)
    if not items:              # no states to carry (a model without a recurrent state)
        return []
    b = per_replica_batch_size(strategy, int(items[0].shape[0]))

    try:  # one device per local replica (Mirrored, OneDevice, MultiWorker, TPU); default: none
        devices = strategy.extended.worker_devices
    except RuntimeError:
        devices = ()

    def rows_of_replica(context):  # called once per replica of this process
        i = context.replica_id_in_sync_group   # numbered across all workers, worker by worker
        with tf.device(devices[i % len(devices)] if devices else None):  # the slice to its device
            return [tf.identity(v[i * b:(i + 1) * b]) for v in items]

    parts = strategy.experimental_distribute_values_from_function(rows_of_replica)  # [PerReplica]
    if len(devices) <= 1:  # one replica here (e.g. a worker with one CPU): plain tensors, as
        parts = [strategy.experimental_local_results(p)[0] for p in parts]  # strategy.run returns
    return parts[0] if single else parts                                     # (else: a retrace)


def gather_rows(strategy, values):
    """The inverse of ``split_rows``: concatenate the replicas' slices in row order.

    Takes one distributed value (or a list of them) and returns ``(B, ...)`` tensors.
    Under a multi-worker strategy the other workers' slices are in other processes, so it
    is an all-gather (``strategy.gather``), a collective operation: every worker must call
    it at the same point, and every worker gets the whole ``(B, ...)``.
    """
    import tensorflow as tf

    single = not isinstance(values, (list, tuple))
    items = [values] if single else list(values)
    if items and spans_processes(strategy):
        out = _all_gather(strategy)(items)
    else:
        out = [tf.concat([tf.convert_to_tensor(p) for p in strategy.experimental_local_results(v)], axis=0)
               for v in items]
    return out[0] if single else out


# One compiled all-gather per strategy: called eagerly, strategy.gather traces a new
# function at every call (slow, and a retracing warning on stderr).  Weak keys, and a
# function that holds its strategy weakly: the cache keeps no strategy alive.
_ALL_GATHER = weakref.WeakKeyDictionary()


def _all_gather(strategy):
    if strategy not in _ALL_GATHER:
        import tensorflow as tf

        held = weakref.ref(strategy)

        @tf.function
        def all_gather(items):  # [PerReplica (b, ...)] -> [(B, ...)], replicas in order
            return [held().gather(v, axis=0) for v in items]

        _ALL_GATHER[strategy] = all_gather
    return _ALL_GATHER[strategy]


# --------------------------------------------------------------------------- cuDNN


def cudnn_blockers(model) -> dict[str, list[str]]:
    """For each recurrent layer of ``model``, what keeps it off the cuDNN kernel.

    An empty list means the layer meets Keras's conditions for the fused cuDNN kernel
    (used automatically when a GPU is visible): an ``LSTM`` or ``GRU`` layer with tanh
    activation, sigmoid recurrent activation, no recurrent dropout, not unrolled, with
    bias, ``use_cudnn`` not False, and for a GRU ``reset_after=True``.  A ``SimpleRNN``
    or a generic ``keras.layers.RNN`` around a custom cell (the peephole LSTM) has no
    cuDNN kernel at all.
    """
    import keras

    from charrnn_lib.model import recurrent_layers

    report = {}
    for layer in recurrent_layers(model):
        reasons = []
        if not isinstance(layer, (keras.layers.LSTM, keras.layers.GRU)):
            reasons.append(f"{type(layer).__name__} of {type(layer.cell).__name__}: no cuDNN kernel")
        else:
            cell = layer.cell
            if cell.activation is not keras.activations.tanh:
                reasons.append(f"activation {cell.activation.__name__}, not tanh")
            if cell.recurrent_activation is not keras.activations.sigmoid:
                reasons.append(f"recurrent_activation {cell.recurrent_activation.__name__}, not sigmoid")
            if cell.recurrent_dropout:
                reasons.append(f"recurrent_dropout={cell.recurrent_dropout}")
            if layer.unroll:
                reasons.append("unroll=True")
            if not cell.use_bias:
                reasons.append("use_bias=False")
            if layer.use_cudnn is False:
                reasons.append("use_cudnn=False")
            if isinstance(layer, keras.layers.GRU) and not cell.reset_after:
                reasons.append("reset_after=False")
        report[layer.name] = reasons
    return report
