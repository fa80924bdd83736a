# Random numbers of the kernels, defined once: splitmix64 streams, uniforms,
# Box-Muller normals.  Streams are derived from a 64-bit seed per row, block
# or feature, so that results do not depend on the number of threads.
from libc.math cimport cos, log, sqrt
from libc.stdint cimport uint64_t

# splitmix64: used to derive independent streams (per row, per block) from a
# 64-bit seed, and as a small, fast generator in its own right.
cdef inline uint64_t splitmix64(uint64_t *state) noexcept nogil:
    cdef uint64_t z
    state[0] += <uint64_t>0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline double rand_uniform(uint64_t *state) noexcept nogil:
    """Uniform double in [0, 1) with 53 random bits."""
    return (splitmix64(state) >> 11) * (1.0 / 9007199254740992.0)


# Box-Muller: two uniforms u1 in (0, 1], u2 in [0, 1) give the independent
# standard normals radius * cos(angle) and radius * sin(angle).
cdef inline double bm_radius(double u1) noexcept nogil:
    return sqrt(-2.0 * log(u1))


cdef inline double bm_angle(double u2) noexcept nogil:
    return 6.283185307179586 * u2


cdef inline double std_normal(uint64_t* st) noexcept nogil:
    """One standard normal from the stream ``st`` (Box-Muller's cosine half)."""
    cdef double u1 = 1.0 - rand_uniform(st)   # (0, 1]
    cdef double u2 = rand_uniform(st)
    return bm_radius(u1) * cos(bm_angle(u2))
