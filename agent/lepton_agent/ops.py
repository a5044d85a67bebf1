"""The handler of each operation of the registry in wire.py: a typed request -> its reply."""

from __future__ import annotations

from . import chunks, datasets, files, jobs, keys, probe, refs, sampling, wire
from .wire import AGENT_VERSION, SCHEMA, BadRequest


class Context:
    """What a handler may use besides its request."""

    def __init__(self, root, data_dir):
        self.root = root
        self.data_dir = data_dir


def check_flags(request, names):
    flags = [getattr(request, name) for name in names]
    if not all(isinstance(flag, bool) for flag in flags):
        raise BadRequest("%s must be true or false" % " and ".join(names))
    return flags


def sample(request, ctx):
    (gpus,) = check_flags(request, ("gpus",))
    ids = request.jobs
    if ids is not None:
        if not isinstance(ids, list) or len(ids) > sampling.MAX_JOBS:
            raise BadRequest("jobs must be a list of at most %d job ids" % sampling.MAX_JOBS)
        ids = [wire.check_job_id(job_id) for job_id in ids]
    return sampling.sample(ctx.root, ctx.data_dir, gpus, ids)


def chunk_verify(request, ctx):
    hashes = wire.check_hashes(request.hashes, allow_all=True)
    if hashes is None:
        hashes = sorted(chunks.stored_chunks(ctx.data_dir))
    return chunks.chunk_verify(ctx.data_dir, hashes)


def chunk_unpin(request, ctx):
    store = wire.check_store_id(request.store)
    candidates = wire.check_hashes(request.hashes or [])
    return refs.chunk_unpin(ctx.data_dir, store, wire.check_refs(request.refs), candidates)


def chunk_gc(request, ctx):
    store = wire.check_store_id(request.store)
    keep = set(wire.check_refs(request.keep))
    flags = check_flags(request, ("release_legacy", "check"))
    return refs.chunk_gc(ctx.data_dir, store, keep, *flags)


def chunk_drop(request, ctx):
    store = wire.check_store_id(request.store)
    flags = check_flags(request, ("corrupt", "check"))
    return refs.chunk_drop(ctx.data_dir, store, wire.check_hashes(request.hashes), *flags)


HANDLERS = {
    "probe": lambda r, ctx: probe.probe(ctx.root, ctx.data_dir),
    "sample": sample,
    "ping": lambda r, ctx: {"schema": SCHEMA, "pong": True, "agent_version": AGENT_VERSION},
    "version": lambda r, ctx: {"schema": SCHEMA, "agent_version": AGENT_VERSION},
    "job-start": lambda r, ctx: jobs.start_job(ctx.data_dir, r.spec),
    "job-status": lambda r, ctx: jobs.job_statuses(ctx.data_dir, r.ids),
    "job-kill": lambda r, ctx: jobs.kill_job(ctx.data_dir, r.id, r.grace),
    "job-log": lambda r, ctx: jobs.read_job_log(ctx.data_dir, r.id, r.offset, r.limit),
    "job-rm": lambda r, ctx: jobs.remove_job(ctx.data_dir, r.id),
    "chunk-have": lambda r, ctx: chunks.chunk_have(
        ctx.data_dir, wire.check_hashes(r.hashes, allow_all=True)
    ),
    "chunk-verify": chunk_verify,
    "chunk-rm": lambda r, ctx: chunks.chunk_rm(ctx.data_dir, wire.check_hashes(r.hashes)),
    "chunk-import": lambda r, ctx: chunks.chunk_import(ctx.data_dir, r.items),
    "chunk-pin": lambda r, ctx: refs.chunk_pin(
        ctx.data_dir, wire.check_store_id(r.store), refs.check_pins(r.refs)
    ),
    "chunk-unpin": chunk_unpin,
    "chunk-gc": chunk_gc,
    "chunk-drop": chunk_drop,
    "grant": lambda r, ctx: keys.grant(ctx.data_dir, r),
    "revoke": lambda r, ctx: keys.revoke(ctx.data_dir, r.transfer),
    "scan": lambda r, ctx: datasets.scan_tree(r.path, r.chunk_size, r.hash, r.pack),
    "file-status": lambda r, ctx: files.file_status(r.files, r.dest, r.dirs, r.links),
    "path-info": lambda r, ctx: datasets.path_info(r.paths),
    "materialize": lambda r, ctx: datasets.materialize(
        ctx.data_dir, r.dest, r.manifest or {}, r.label
    ),
}
assert set(HANDLERS) == set(wire.OPS), "every registered op has a handler, and only those"


def handle(request, ctx):
    """One request dict -> its reply dict (a BadRequest or another error propagates)."""
    op = request.get("op")
    cls = wire.OPS.get(op) if isinstance(op, str) else None
    if cls is None:
        return {"schema": SCHEMA, "error": "unknown op %r" % (op,)}
    return HANDLERS[op](cls.from_wire(request), ctx)
