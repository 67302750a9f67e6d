"""Exact selection of the MCKP cut over rows held in shards (ranks of a process group, chunks of a file).

The single-process solvers (:mod:`bidfcl.solver`) order every hull step of every individual by
``(bp desc, individual asc, step asc)`` and walk that order from the cheapest policy: the cut is
the first step (event) whose running total ``base + sum delta`` exceeds the budget ``b``. Here
the steps live in *segments*: each holds the events of a contiguous range of rows, and a segment's
``ordinal`` is its position in row order, so the global order is ``(bp desc, ordinal asc, local
id asc)``. Nobody holds all events. The cut is found in rounds, each one pass over the local
segments and one or two small collectives:

* ``hist``: the events with key in a window ``[lo, hi]`` (the key is the breakpoint's bit pattern,
  monotone in bp) fall into ``nbins`` bins; per bin the global count, sum of deltas ``S`` and an
  upper bound ``U`` on the largest partial sum inside the bin (sum over segments of each segment's
  largest prefix sum; ``U = S`` when every delta is >= 0) are all-reduced. Walking the bins from
  the top with the exact totals, the first bin whose start + ``U`` exceeds ``b`` may hold the
  crossing; the first whose start + ``S`` exceeds it surely does (or an earlier one).
* ``cand``: once the bins between those two hold at most ``cap`` events globally, the events are
  all-gathered and every rank walks them in the global order (identical data, identical result).
* ``tie``: a bin of a single key with more than ``cap`` events (many equal breakpoints): its
  events are ordered by segment, so each segment sends only its sum and largest prefix sum; the
  first segment whose exclusive-prefix start + largest prefix exceeds ``b`` holds the crossing, and
  its owner (``tiewalk``) finds the event.

Communication per round is ``O(nbins)`` (all-reduce) or ``O(P * cap)`` (all-gather), never
``O(N)``. With the budget below every partial sum the search keeps going down the key range
(non-monotone IPW estimates can dip); with no crossing at all every step is taken (lam = 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple

import torch
import torch.distributed as dist

_F64 = torch.float64
_I64 = torch.int64
INT64_MAX = 2**63 - 1


# --------------------------------------------------------------------------------------------------
# breakpoint keys: the bit pattern of a non-negative float is monotone in its value
# --------------------------------------------------------------------------------------------------


def bp_keys(bp: torch.Tensor) -> torch.Tensor:
    """int64 keys with ``key(a) < key(b)  <=>  a < b`` for breakpoints ``bp >= 0`` (``+inf`` allowed)."""
    if bp.dtype == torch.float32:
        return bp.contiguous().view(torch.int32).to(_I64)
    if bp.dtype == torch.float64:
        return bp.contiguous().view(_I64)
    raise TypeError(f"bidfcl: breakpoints must be float32 or float64, got {bp.dtype}")


def key_to_bp(key: int, dtype: torch.dtype) -> torch.Tensor:
    """The breakpoint (0-d tensor of ``dtype``) whose key is ``key``."""
    if dtype == torch.float32:
        return torch.tensor([key], dtype=torch.int32).view(torch.float32)[0]
    return torch.tensor([key], dtype=_I64).view(_F64)[0]


def _bits(x: float) -> int:
    return int(torch.tensor([x], dtype=_F64).view(_I64)[0])


def _from_bits(b) -> float:
    return float(torch.as_tensor(b, dtype=_I64).reshape(1).view(_F64)[0])


# --------------------------------------------------------------------------------------------------
# communication: a process group, or one process (chunks only)
# --------------------------------------------------------------------------------------------------


class Comm:
    """The collectives the selection needs, with a count of what they move.

    ``bytes`` counts, per rank, the payload of every collective: the tensor for an all-reduce and
    the gathered result (``P`` x the local part) for an all-gather.
    """

    def __init__(self, group=None):
        self.dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        backend = str(dist.get_backend(group)).lower()
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        self.bytes = 0
        self.collectives = 0

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        t = t.to(self.device).clone()
        self.bytes += t.numel() * t.element_size()
        self.collectives += 1
        red = {"sum": self.dist.ReduceOp.SUM, "max": self.dist.ReduceOp.MAX}[op]
        self.dist.all_reduce(t, op=red, group=self.group)
        return t.cpu()

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        t = t.to(self.device).contiguous()
        out = [torch.empty_like(t) for _ in range(self.size)]
        self.bytes += self.size * t.numel() * t.element_size()
        self.collectives += 1
        self.dist.all_gather(out, t, group=self.group)
        return [o.cpu() for o in out]

    def all_gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Concatenation, in rank order, of every rank's int64 ``[r_p, C]`` rows (r_p may differ)."""
        n = self.all_reduce(torch.tensor([rows.shape[0]], dtype=_I64), op="max")
        width = int(n[0])
        if width == 0:
            return rows[:0]
        pad = torch.full((width, rows.shape[1]), -1, dtype=_I64)
        pad[: rows.shape[0]] = rows
        parts = self.all_gather(pad)
        return torch.cat([p[p[:, 0] >= 0] for p in parts])


class LocalComm:
    """A group of one: the collectives are identities (streaming on a single process)."""

    rank, size = 0, 1

    def __init__(self):
        self.bytes = 0
        self.collectives = 0

    def all_reduce(self, t, op="sum"):
        return t.clone()

    def all_gather(self, t):
        return [t.clone()]

    def all_gather_rows(self, rows):
        return rows


# --------------------------------------------------------------------------------------------------
# segments and the selection
# --------------------------------------------------------------------------------------------------


class Segment(NamedTuple):
    """Events of one contiguous range of rows, in (row, step) order (``bidfcl::mckp_events``)."""

    ordinal: int  #: position of the range in the global row order
    key: torch.Tensor  #: int64 breakpoint keys
    id: torch.Tensor  #: int64 local row * M + step
    delta: torch.Tensor  #: float64 what each event adds to the running total


class Cut(NamedTuple):
    """The global cut for one budget. ``kind``: 'infeasible', 'all' (every step fits) or 'cut'."""

    kind: str
    key: int = -1  #: breakpoint key of the first event not taken
    ordinal: int = -1  #: its segment
    id: int = -1  #: its local id (row * M + step)
    total: float = 0.0  #: running total just before it (for 'all': after everything; 'infeasible': base)

    def local(self, ordinal: int, m: int, dtype: torch.dtype):
        """``(lam, individual, step)`` of this cut for the segment ``ordinal`` (``apply_mckp_cut``)."""
        if self.kind == "infeasible":
            return torch.tensor(float("inf"), dtype=dtype), 0, 0
        if self.kind == "all":
            return torch.zeros((), dtype=dtype), INT64_MAX, 0
        lam = key_to_bp(self.key, dtype)
        if ordinal < self.ordinal:
            return lam, INT64_MAX, 0  # every tie at lam is taken
        if ordinal > self.ordinal:
            return lam, 0, 0  # no tie at lam is taken
        return lam, self.id // m, self.id % m

    def lam(self, dtype: torch.dtype) -> torch.Tensor:
        if self.kind == "infeasible":
            return torch.tensor(float("inf"), dtype=dtype)
        if self.kind == "all":
            return torch.zeros((), dtype=dtype)
        return key_to_bp(self.key, dtype)


@dataclass
class _Search:
    """One budget's state: events with key > ``hi`` are summed into ``start`` and do not cross."""

    budget: float
    start: float
    lo: int
    hi: int
    kmin: int
    request: tuple = ()
    result: Cut | None = None
    log: list = field(default_factory=list)

    def below(self, resolved_low: int, total: float):
        """Everything with key >= ``resolved_low`` is done, without a crossing: continue underneath."""
        self.start = total
        if resolved_low <= self.kmin:
            self.result = Cut("all", total=total)
        else:
            self.lo, self.hi = self.kmin, resolved_low - 1
            self.request = ("hist",)


def _slack(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    # the bound U is a sum of floats: widen it a little so that rounding never hides a crossing
    return 1e-9 * (x.abs() + u.abs()) + 1e-300


def _bin_layout(lo: int, hi: int, nbins: int) -> tuple[int, int]:
    span = hi - lo + 1
    width = -(-span // nbins)
    return width, -(-span // width)


def _local_hist(seg: Segment, lo: int, hi: int, width: int, nb: int, monotone: bool):
    mask = (seg.key >= lo) & (seg.key <= hi)
    key, delta = seg.key[mask], seg.delta[mask]
    j = torch.div(hi - key, width, rounding_mode="floor")
    cnt = torch.bincount(j, minlength=nb).to(_F64)
    s = torch.bincount(j, weights=delta, minlength=nb).to(_F64)
    if monotone or key.numel() == 0:
        return cnt, s, s.clamp_min(0.0)
    order = torch.argsort(key, descending=True, stable=True)  # (key desc, id asc): the local order
    js, ds = j[order], delta[order]
    cs = torch.cumsum(ds, 0)
    prev = torch.cat([cs.new_zeros(1), cs[:-1]])
    _, counts = torch.unique_consecutive(js, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rel = cs - torch.repeat_interleave(prev[starts], counts)
    u = torch.zeros(nb, dtype=_F64).scatter_reduce(0, js, rel, "amax", include_self=True)
    return cnt, s, u


def _tie_stats(seg: Segment, key: int):
    d = seg.delta[seg.key == key]
    if d.numel() == 0:
        return None
    cs = torch.cumsum(d, 0)
    return float(cs[-1]), float(cs.max()), cs


def select_cuts(
    segments: Callable[[], Iterable[Segment]],
    comm,
    budgets: list[float],
    base: float,
    kmin: int,
    kmax: int,
    *,
    monotone: bool,
    nbins: int = 4096,
    cap: int = 4096,
    stats: dict | None = None,
) -> list[Cut]:
    """The cut of every budget over the union of all ranks' segments (see the module docstring).

    ``segments()`` yields this rank's segments (it may recompute them: it is called once a round);
    ``base`` is the global running total before any event (the cheapest policy's), and
    ``[kmin, kmax]`` the global key range of the events (``kmax < kmin`` when there are none).
    Every argument except ``segments`` must be equal on all ranks; so are the results.
    """
    searches = []
    for b in budgets:
        s = _Search(budget=b, start=base, lo=kmin, hi=kmax, kmin=kmin)
        if base > b:
            s.result = Cut("infeasible", total=base)
        elif kmax < kmin:
            s.result = Cut("all", total=base)
        else:
            s.request = ("hist",)
        searches.append(s)
    rounds = 0
    while any(s.result is None for s in searches):
        rounds += 1
        active = [s for s in searches if s.result is None]
        hist_req = [s for s in active if s.request[0] == "hist"]
        layouts = [_bin_layout(s.lo, s.hi, nbins) for s in hist_req]
        hist_local = [[torch.zeros(nb, dtype=_F64) for _ in range(3)] for _, nb in layouts]
        rows = []
        for seg in segments():
            for q, s in enumerate(hist_req):
                width, nb = layouts[q]
                for acc, part in zip(hist_local[q], _local_hist(seg, s.lo, s.hi, width, nb, monotone)):
                    acc += part
            for q, s in enumerate(active):
                kind = s.request[0]
                if kind == "cand":
                    _, lo, hi = s.request[:3]
                    mask = (seg.key >= lo) & (seg.key <= hi)
                    k = int(mask.sum())
                    if k:
                        rows.append(
                            torch.stack(
                                [
                                    torch.full((k,), q, dtype=_I64),
                                    seg.key[mask],
                                    torch.full((k,), seg.ordinal, dtype=_I64),
                                    seg.id[mask],
                                    seg.delta[mask].view(_I64),
                                    torch.zeros(k, dtype=_I64),
                                ],
                                1,
                            )
                        )
                elif kind == "tie":
                    st = _tie_stats(seg, s.request[1])
                    if st is not None:
                        rows.append(
                            torch.tensor([[q, s.request[1], seg.ordinal, -1, _bits(st[0]), _bits(st[1])]], dtype=_I64)
                        )
                elif kind == "tiewalk":
                    _, key, ordinal, seg_start = s.request
                    if seg.ordinal != ordinal:
                        continue
                    d = seg.delta[seg.key == key]
                    cs = torch.cumsum(d, 0)
                    over = torch.nonzero(seg_start + cs > s.budget)
                    i = int(over[0]) if over.numel() else d.numel() - 1  # the tie said it crosses
                    before = seg_start + float(cs[i - 1]) if i > 0 else seg_start
                    ids = seg.id[seg.key == key]
                    rows.append(torch.tensor([[q, key, ordinal, int(ids[i]), _bits(before), 0]], dtype=_I64))
        requests = [s.request for s in active]  # the consumers below replace them
        if stats is not None:
            for r in requests:
                stats[r[0]] = stats.get(r[0], 0) + 1
        flat = comm.all_reduce(torch.cat([t for h in hist_local for t in h])) if hist_req else None
        gathered = None
        if any(r[0] != "hist" for r in requests):
            gathered = comm.all_gather_rows(torch.cat(rows) if rows else torch.zeros((0, 6), dtype=_I64))
        off = 0
        for q, s in enumerate(hist_req):
            width, nb = layouts[q]
            cnt, tot, up = flat[off : off + nb], flat[off + nb : off + 2 * nb], flat[off + 2 * nb : off + 3 * nb]
            off += 3 * nb
            _consume_hist(s, cnt, tot, up, width, nb, cap)
        for q, (s, req) in enumerate(zip(active, requests)):
            if req[0] == "hist":
                continue
            mine = gathered[gathered[:, 0] == q]
            if req[0] == "cand":
                _consume_cand(s, mine)
            elif req[0] == "tie":
                _consume_tie(s, mine)
            else:
                r = mine[0]
                s.result = Cut("cut", key=int(r[1]), ordinal=int(r[2]), id=int(r[3]), total=_from_bits(r[4]))
    if stats is not None:
        stats["rounds"] = stats.get("rounds", 0) + rounds
    return [s.result for s in searches]


def _consume_hist(s: _Search, cnt, tot, up, width: int, nb: int, cap: int):
    # bin j holds keys [hi - (j+1) width + 1, hi - j width] (clipped to [lo, hi]); bin 0 is the top
    starts = s.start + torch.cat([tot.new_zeros(1), torch.cumsum(tot, 0)[:-1]])
    nonempty = cnt > 0
    maybe = nonempty & (starts + up + _slack(starts, up) > s.budget)
    if not bool(maybe.any()):
        s.below(s.lo, float(starts[-1] + tot[-1]))
        return
    j0 = int(torch.nonzero(maybe)[0])
    sure = nonempty & (starts + tot > s.budget)
    sure[:j0] = False
    j1 = int(torch.nonzero(sure)[0]) if bool(sure.any()) else nb - 1
    top = s.hi - j0 * width
    bottom = max(s.lo, s.hi - (j1 + 1) * width + 1)
    start0 = float(starts[j0])
    n_cand = int(cnt[j0 : j1 + 1].sum())
    s.log.append(("hist", width, j0, j1, n_cand))
    if n_cand <= cap:
        s.start, s.request = start0, ("cand", bottom, top)
        return
    bin_bottom = max(s.lo, top - width + 1)
    if bin_bottom == top:  # a single key with more than cap events: resolve by segment sums
        s.start, s.request = start0, ("tie", top)
        return
    if (bottom, top) == (s.lo, s.hi):
        bottom = bin_bottom  # no narrowing from the bounds: look at the first candidate bin alone
    s.start, s.lo, s.hi, s.request = start0, bottom, top, ("hist",)


def _consume_cand(s: _Search, rows):
    _, lo, hi = s.request
    if rows.shape[0] == 0:
        s.below(lo, s.start)
        return
    # global order: key desc, ordinal asc, id asc (three stable sorts, last key first)
    rows = rows[torch.argsort(rows[:, 3], stable=True)]
    rows = rows[torch.argsort(rows[:, 2], stable=True)]
    rows = rows[torch.argsort(rows[:, 1], descending=True, stable=True)]
    delta = rows[:, 4].contiguous().view(_F64)
    cum = torch.cumsum(torch.cat([torch.tensor([s.start], dtype=_F64), delta]), 0)
    over = torch.nonzero(cum[1:] > s.budget)
    if over.numel() == 0:
        s.below(lo, float(cum[-1]))
        return
    e = int(over[0])
    r = rows[e]
    s.result = Cut("cut", key=int(r[1]), ordinal=int(r[2]), id=int(r[3]), total=float(cum[e]))


def _consume_tie(s: _Search, rows):
    key = s.request[1]
    rows = rows[torch.argsort(rows[:, 2], stable=True)]
    start = s.start
    for r in rows:
        total, peak = _from_bits(r[4]), _from_bits(r[5])
        if start + peak > s.budget:
            s.request = ("tiewalk", key, int(r[2]), start)
            return
        start = start + total
    s.below(key, start)
