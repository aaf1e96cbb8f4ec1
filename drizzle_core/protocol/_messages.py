"""The messages between driver and workers, and between workers.

Messages are plain tuples whose first item is a tag: they are on the per-task
path (results, shuffle buckets), where a tuple pickles several times faster
than an object. This table is the protocol; ``_worker.py`` and
``_scheduler.py`` are its only readers and writers.

driver → worker
    (LAUNCH, group, program_id, program_bytes | None, tasks, routes, forwards, drops, epochs, trace, sources,
     stamps, hold)
        One per worker per group. ``program_bytes`` is the cloudpickled
        ``Program`` (nodes and job functions), sent only when the worker does
        not hold ``program_id`` yet (both sides keep the same LRU of
        ``PROGRAM_CACHE`` programs). ``tasks``: the worker's ``Task`` tuples.
        ``routes``: ``{run: ((dest workers) per reduce partition)}`` for the
        shuffles this worker maps for. ``forwards``: ``[(block, dest)]`` —
        send this block to ``dest`` once it exists. ``drops``: cached blocks
        to forget (unpersisted datasets). ``epochs``: ``{worker: incarnation}``
        for replaced workers (connections to older incarnations are closed).
        ``trace``: record each task's start and duration for the trace file.
        ``sources``: ``{(source node, partition): data}`` for the source partitions this
        worker's tasks compute (the program carries sources without their data, so
        each partition travels to one worker only).
        ``stamps``: ``[(template id, slice | None, instances), ...]``: jobs that
        repeat a template's shape (``driver/_template.py``), which the worker
        stamps into tasks itself (``protocol.stamp``). ``slice`` is the
        worker's share of the template, sent only when the worker does not
        hold it yet (both sides keep the same LRU of ``TEMPLATE_CACHE``):
        ``(ids, shuffle ids, runs, start, local positions, tasks, routes)``.
        ``instances`` is a pickle, made once per group and shared by every
        worker's message, of ``[(first task index, job, ids, shuffle ids,
        runs, start), ...]`` packed as arithmetic runs (``pack_instances``).
        ``hold``: seconds the worker may keep the group's results before
        sending them (0: as soon as its ready queue runs dry); they always
        go with the group's DONE at the latest.
    (ABORT, group, [block ...])   forget everything about the group, but keep
                          these cached blocks it made (finished jobs' state)
    (DROP, [block ...])   forget cached blocks
    (STOP,)               exit
    (DESCRIBE, token[, detail])  report the runtime's bookkeeping (tests assert it is empty after work);
                          detail: with what it waits for (a group the driver has not heard of in a while)
    (CONFIG, {"heartbeat": seconds | None, "task_timeout": seconds | None})
                          sent once when the worker is connected (process transports): send
                          HEARTBEAT every ``heartbeat`` seconds from a thread of the worker (so a
                          long task does not look dead); interrupt a task that runs longer than
                          ``task_timeout`` (it fails with ``TaskTimeout``)

worker → driver
    (RESULTS, group, [(task index, attempt, value), ...])   batched
    (FAILED, group, task index, attempt, traceback text, pickled exception | None)
    (DONE, group, busy seconds, tasks run, stats, results)    all of this worker's tasks of the group
        ran; ``stats``: ``{"bytes_sent": bytes this worker sent, "spans": [(task, start, seconds)] | None}``;
        ``results``: the group's last results (as in RESULTS), saving a message

    (DESCRIBED, token, {container: size}[, text])   the answer to DESCRIBE (text: asked for detail)
    (HEARTBEAT,)          "still here"; the driver's transport consumes it (a silent worker is lost)

worker → worker
    (BLOCKS, group, [(block, value), ...])   shuffle buckets / forwarded cached blocks
"""

LAUNCH = "launch"
ABORT = "abort"
DROP = "drop"
STOP = "stop"
RESULTS = "results"
FAILED = "failed"
DONE = "done"
BLOCKS = "blocks"
DESCRIBE = "describe"
DESCRIBED = "described"
CONFIG = "config"
HEARTBEAT = "heartbeat"

# How a FAILED traceback starts when the worker could not unpickle the group's program.
PROGRAM_LOAD_FAILED = "could not load the group's program on this worker"

DRIVER = -1
PROGRAM_CACHE = 16
TEMPLATE_CACHE = 64
