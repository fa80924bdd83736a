"""The merge of parameter mixing (cfm._train.mix.merge) as nogil kernels.

A round's updates are merged into the client's table in a few passes over
the updates, memory-bound (a few ms per million rows) instead of NumPy's
sort / search / float64 temporaries:

1. ``mark``: per update, count how many updates touch each row
   (``cnt[row]``, a zeroed int32 array of the table's length);
2. ``accumulate``: per update, in worker order: a row only this update
   touched is copied into the table; a row several touched gets a slot (in
   order of first appearance) holding its float64 base and the sums the
   merge rule needs (count-weighted sum of changed values and its weight,
   sum of changes);
3. ``finish``: every slot's row is written back by the rule ("sum": base +
   sum of changes; "average": count-weighted mean of the changed values;
   summed columns -- optimizer state -- base + sum of increments; FTRL's w
   from the merged z and n);
4. ``unmark``: cnt and slot back to zero for the next round.

Python (cfm._train.mix) validates shapes and ids before calling these; the
arithmetic is that of the NumPy reference in tests/test_dask.py, in the same
order, so the result is the same bit for bit.
"""
import numpy as np

from libc.math cimport sqrt, fabs
from libc.stdint cimport int32_t, int64_t, uint8_t

from cfm._common cimport floating


def mark(int32_t[::1] cnt, const int64_t[::1] rows):
    """cnt[row] += 1 for each row; return how many rows became shared
    (their count reached 2)."""
    cdef Py_ssize_t i
    cdef int64_t r, n_new = 0
    with nogil:
        for i in range(rows.shape[0]):
            r = rows[i]
            cnt[r] += 1
            if cnt[r] == 2:
                n_new += 1
    return n_new


def unmark(int32_t[::1] cnt, int32_t[::1] slot, const int64_t[::1] rows):
    cdef Py_ssize_t i
    with nogil:
        for i in range(rows.shape[0]):
            cnt[rows[i]] = 0
            slot[rows[i]] = 0


def accumulate(floating[:, :] arr, int cols, const int64_t[::1] rows,
               const floating[:, ::1] tab, const double[::1] counts,
               const int32_t[::1] cnt, int32_t[::1] slot, int64_t[::1] shared,
               double[:, ::1] base, double[:, ::1] num, double[:, ::1] den,
               double[:, ::1] inc, int64_t n_slots):
    """One update into the table / the slots (see the module docstring);
    ``slot[row]`` is the row's slot + 1 (0: none yet).  Returns the number
    of slots used."""
    cdef Py_ssize_t i, c
    cdef int64_t r, s
    cdef double R, B, w
    with nogil:
        for i in range(rows.shape[0]):
            r = rows[i]
            if cnt[r] == 1:
                for c in range(cols):
                    arr[r, c] = tab[i, c]
                continue
            s = slot[r] - 1
            if s < 0:
                s = n_slots
                n_slots += 1
                slot[r] = <int32_t>(s + 1)
                shared[s] = r
                for c in range(cols):
                    base[s, c] = arr[r, c]
            w = counts[i]
            for c in range(cols):
                R = tab[i, c]
                B = base[s, c]
                if R != B:
                    # weight of an entry: the worker's touch count where it
                    # changed the entry
                    num[s, c] += w * R
                    den[s, c] += w
                inc[s, c] += R - B
    return n_slots


def finish(floating[:, :] arr, int cols, const int64_t[::1] shared, int64_t n_slots,
           double[:, ::1] base, const double[:, ::1] num, const double[:, ::1] den,
           const double[:, ::1] inc, const uint8_t[::1] avg, const uint8_t[::1] summed,
           bint use_sum, int ftrl_w, int ftrl_z, int ftrl_n, double lr, double l1,
           double l2, double beta):
    """Write every slot's merged row (rules: module docstring).  ``ftrl_w``
    < 0: no FTRL weight column.  ``base`` is overwritten (scratch)."""
    cdef Py_ssize_t s, c
    cdef int64_t r
    cdef double v, z, n, sg
    with nogil:
        for s in range(n_slots):
            r = shared[s]
            for c in range(cols):
                v = base[s, c]
                if avg[c]:
                    if use_sum:
                        v = v + inc[s, c]
                    elif den[s, c] > 0:
                        v = num[s, c] / den[s, c]
                if summed[c]:
                    v = v + inc[s, c]
                base[s, c] = v
            if ftrl_w >= 0:
                z = base[s, ftrl_z]
                n = base[s, ftrl_n]
                if fabs(z) <= l1:
                    base[s, ftrl_w] = 0.0
                else:
                    sg = 1.0 if z > 0 else -1.0
                    base[s, ftrl_w] = -(z - sg * l1) / ((beta + sqrt(n)) / lr + l2)
            for c in range(cols):
                arr[r, c] = <floating>base[s, c]


def touched(const int32_t[::1] indices, int32_t[::1] cnt):
    """(rows, counts): the distinct values of ``indices`` (all in [0,
    len(cnt))), sorted, and how often each occurs -- np.bincount +
    flatnonzero without allocating a count array per call: ``cnt`` is a
    zeroed scratch of the table's length, zeroed again on return."""
    cdef Py_ssize_t i, j, n_rows = 0
    cdef int64_t n = cnt.shape[0]
    with nogil:
        for i in range(indices.shape[0]):
            if cnt[indices[i]] == 0:
                n_rows += 1
            cnt[indices[i]] += 1
    rows_arr = np.empty(n_rows, dtype=np.int64)
    counts_arr = np.empty(n_rows, dtype=np.float64)
    cdef int64_t[::1] rows = rows_arr
    cdef double[::1] counts = counts_arr
    with nogil:
        j = 0
        for i in range(n):
            if cnt[i]:
                rows[j] = i
                counts[j] = cnt[i]
                cnt[i] = 0
                j += 1
    return rows_arr, counts_arr
