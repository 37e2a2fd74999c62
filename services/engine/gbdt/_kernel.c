/* Native arithmetic of the feature party's CKKS histogram step (docs/adr/0012, fifth pass).
 *
 * Polynomials of degree n in SEAL's NTT form (the negacyclic NTT with the minimal primitive
 * 2n-th root, outputs in bit-reversed order; checked against SEAL in
 * tests/engine/test_gbdt_native.py), residues modulo one prime q < 2^60 as uint64:
 *   - ntt_forward / ntt_inverse: SEAL-compatible transforms (Shoup products, fully reduced);
 *   - mac: out = sum_i x_i * w_i (mod q) over many pairs, one Barrett reduction per sum;
 *   - rotate_many / rotate_sum: rotations, i.e. Galois automorphisms and the hybrid key
 *     switching of one data prime and one special prime as SEAL's switch_key_inplace computes it,
 *     hoisted (one decomposition for several rotations of one ciphertext; one division by the
 *     special prime for a sum of rotations);
 *   - encode_finish: the last steps of the CKKS encoding of 0/1 slot vectors;
 *   - add_mod: element-wise sums.
 * Loaded with ctypes (services/engine/gbdt/native.py); the module init only makes the file an
 * importable extension so that setuptools builds and installs it.
 */
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

typedef unsigned __int128 u128;

static inline uint64_t mulhi(uint64_t a, uint64_t b) { return (uint64_t)(((u128)a * b) >> 64); }

/* x * w mod q with ws = floor(w * 2^64 / q), w < q: result in [0, q). */
static inline uint64_t mul_shoup(uint64_t x, uint64_t w, uint64_t ws, uint64_t q) {
    uint64_t r = x * w - mulhi(x, ws) * q;
    return r >= q ? r - q : r;
}

/* A 128-bit value modulo q (Barrett with cr = floor(2^128 / q) as two words). */
static inline uint64_t reduce128(u128 v, uint64_t q, uint64_t cr0, uint64_t cr1) {
    uint64_t lo = (uint64_t)v, hi = (uint64_t)(v >> 64);
    u128 t = (u128)lo * cr0;
    uint64_t carry = (uint64_t)(t >> 64);
    t = (u128)lo * cr1 + carry;
    uint64_t tmp1 = (uint64_t)t, tmp3 = (uint64_t)(t >> 64);
    t = (u128)hi * cr0 + tmp1;
    carry = (uint64_t)(t >> 64);
    uint64_t est = hi * cr1 + tmp3 + carry;
    uint64_t r = lo - est * q;
    while (r >= q) r -= q;
    return r;
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>
#define SPLICE_AVX512 1
/* The high 64 bits of the lane-wise 64 x 64-bit products (four 32 x 32-bit products). */
static inline __m512i mulhi_epu64(__m512i a, __m512i b) {
    const __m512i lo32 = _mm512_set1_epi64(0xffffffffLL);
    __m512i ah = _mm512_srli_epi64(a, 32), bh = _mm512_srli_epi64(b, 32);
    __m512i p00 = _mm512_mul_epu32(a, b), p01 = _mm512_mul_epu32(a, bh);
    __m512i p10 = _mm512_mul_epu32(ah, b), p11 = _mm512_mul_epu32(ah, bh);
    __m512i mid = _mm512_add_epi64(_mm512_srli_epi64(p00, 32), _mm512_and_si512(p01, lo32));
    mid = _mm512_add_epi64(mid, _mm512_and_si512(p10, lo32));
    __m512i hi = _mm512_add_epi64(p11, _mm512_srli_epi64(p01, 32));
    hi = _mm512_add_epi64(hi, _mm512_srli_epi64(p10, 32));
    return _mm512_add_epi64(hi, _mm512_srli_epi64(mid, 32));
}

/* x * w - floor(x * ws / 2^64) * q, in [0, 2q) (Shoup, lane-wise). */
static inline __m512i mul_shoup_lazy8(__m512i x, __m512i w, __m512i ws, __m512i q) {
    return _mm512_sub_epi64(_mm512_mullo_epi64(x, w), _mm512_mullo_epi64(mulhi_epu64(x, ws), q));
}

/* x - m where x >= m, else x (x, m unsigned; the wrapped difference is larger than x). */
static inline __m512i sub_if_ge8(__m512i x, __m512i m) {
    return _mm512_min_epu64(x, _mm512_sub_epi64(x, m));
}

/* Stages with t < 8 (t = 4, 2, 1): 16 values = 16 / (2t) butterfly groups per step. X and Y
 * gather each group's upper and lower halves, W repeats each group's root over its lanes,
 * A and B put the results back in place. */
typedef struct {
    long long x[8], y[8], w[8], a[8], b[8];
} SmallStage;

static void small_stage_tables(size_t t, SmallStage *st) {
    int xs = 0, ys = 0, pos[16];
    for (int e = 0; e < 16; e++) {
        int g = e / (int)(2 * t), p = e % (int)(2 * t);
        if (p < (int)t) {
            st->x[xs] = e;
            st->w[xs] = g;
            pos[e] = xs++;
        } else {
            st->y[ys] = e;
            pos[e] = 8 + ys++;
        }
    }
    for (int e = 0; e < 8; e++) {
        st->a[e] = pos[e];
        st->b[e] = pos[8 + e];
    }
}

typedef struct {
    __m512i x, y, w, a, b, q, q2;
    size_t groups;
} SmallVec;

static SmallVec small_vec(size_t t, uint64_t q) {
    SmallStage st;
    small_stage_tables(t, &st);
    SmallVec v = {_mm512_loadu_si512(st.x), _mm512_loadu_si512(st.y), _mm512_loadu_si512(st.w),
                  _mm512_loadu_si512(st.a), _mm512_loadu_si512(st.b),
                  _mm512_set1_epi64((long long)q), _mm512_set1_epi64((long long)(2 * q)),
                  16 / (2 * t)};
    return v;
}

/* One step of a small stage: the halves of 16 / (2t) groups from blk, their roots from r and rs
 * (the groups' consecutive entries, from index i), and the results put back. */
static inline void small_load(const SmallVec *v, const uint64_t *blk, const uint64_t *r,
                              const uint64_t *rs, __m512i *x, __m512i *y, __m512i *w,
                              __m512i *ws) {
    __m512i lo = _mm512_loadu_si512(blk), hi = _mm512_loadu_si512(blk + 8);
    *x = _mm512_permutex2var_epi64(lo, v->x, hi);
    *y = _mm512_permutex2var_epi64(lo, v->y, hi);
    *w = _mm512_permutexvar_epi64(v->w, _mm512_loadu_si512(r));
    *ws = _mm512_permutexvar_epi64(v->w, _mm512_loadu_si512(rs));
}

static inline void small_store(const SmallVec *v, uint64_t *blk, __m512i x, __m512i y) {
    _mm512_storeu_si512(blk, _mm512_permutex2var_epi64(x, v->a, y));
    _mm512_storeu_si512(blk + 8, _mm512_permutex2var_epi64(x, v->b, y));
}

/* Stage t < 8 of ntt_forward (Cooley-Tukey butterflies) or, with `inverse`, of ntt_inverse
 * (Gentleman-Sande): m groups, roots from index m of r and rs. */
static void ntt_small(uint64_t *a, size_t t, size_t m, uint64_t q, const uint64_t *r,
                      const uint64_t *rs, int inverse) {
    const SmallVec v = small_vec(t, q);
    for (size_t i = 0; i < m; i += v.groups) {
        __m512i x, y, w, ws, nx, ny;
        small_load(&v, a + 2 * i * t, r + m + i, rs + m + i, &x, &y, &w, &ws);
        if (inverse) {
            nx = sub_if_ge8(_mm512_add_epi64(x, y), v.q2);
            ny = mul_shoup_lazy8(_mm512_add_epi64(_mm512_sub_epi64(x, y), v.q2), w, ws, v.q);
        } else {
            __m512i u = sub_if_ge8(x, v.q2), d = mul_shoup_lazy8(y, w, ws, v.q);
            nx = _mm512_add_epi64(u, d);
            ny = _mm512_add_epi64(_mm512_sub_epi64(u, d), v.q2);
        }
        small_store(&v, a + 2 * i * t, nx, ny);
    }
}
#endif

/* Forward negacyclic NTT of `count` polynomials in place; rp/rps: psi^bitrev(i) and Shoup.
 * Harvey's lazy butterflies (values in [0, 4q) between stages, q < 2^61), reduced at the end. */
void ntt_forward(uint64_t *a, size_t count, size_t n, uint64_t q, const uint64_t *rp,
                 const uint64_t *rps) {
    const uint64_t q2 = 2 * q;
    for (size_t c = 0; c < count; c++, a += n) {
        size_t t = n;
        for (size_t m = 1; m < n; m <<= 1) {
            t >>= 1;
#ifdef SPLICE_AVX512
            if (t < 8 && n >= 16) {
                ntt_small(a, t, m, q, rp, rps, 0);
                continue;
            }
#endif
            if (t == 1) { /* the last stage: pairs of neighbours */
                for (size_t i = 0; i < m; i++) {
                    uint64_t w = rp[m + i], ws = rps[m + i];
                    uint64_t *x = a + 2 * i;
                    uint64_t u = x[0];
                    u = u >= q2 ? u - q2 : u;
                    uint64_t v = x[1] * w - mulhi(x[1], ws) * q;
                    x[0] = u + v;
                    x[1] = u - v + q2;
                }
                continue;
            }
#ifdef SPLICE_AVX512
            if (t >= 8) {
                const __m512i vq = _mm512_set1_epi64((long long)q);
                const __m512i vq2 = _mm512_set1_epi64((long long)q2);
                for (size_t i = 0; i < m; i++) {
                    size_t j1 = 2 * i * t;
                    const __m512i w = _mm512_set1_epi64((long long)rp[m + i]);
                    const __m512i ws = _mm512_set1_epi64((long long)rps[m + i]);
                    uint64_t *x = a + j1, *y = a + j1 + t;
                    for (size_t j = 0; j < t; j += 8) {
                        __m512i u = sub_if_ge8(_mm512_loadu_si512(x + j), vq2);
                        __m512i v = mul_shoup_lazy8(_mm512_loadu_si512(y + j), w, ws, vq);
                        _mm512_storeu_si512(x + j, _mm512_add_epi64(u, v));
                        _mm512_storeu_si512(y + j, _mm512_add_epi64(_mm512_sub_epi64(u, v), vq2));
                    }
                }
                continue;
            }
#endif
            for (size_t i = 0; i < m; i++) {
                size_t j1 = 2 * i * t;
                uint64_t w = rp[m + i], ws = rps[m + i];
                uint64_t *x = a + j1, *y = a + j1 + t;
                for (size_t j = 0; j < t; j++) {
                    uint64_t u = x[j];
                    u = u >= q2 ? u - q2 : u;
                    uint64_t v = y[j] * w - mulhi(y[j], ws) * q; /* [0, 2q) */
                    x[j] = u + v;
                    y[j] = u - v + q2;
                }
            }
        }
        size_t j0 = 0;
#ifdef SPLICE_AVX512
        {
            const __m512i vq = _mm512_set1_epi64((long long)q);
            const __m512i vq2 = _mm512_set1_epi64((long long)q2);
            for (; j0 + 8 <= n; j0 += 8) {
                __m512i v = sub_if_ge8(_mm512_loadu_si512(a + j0), vq2);
                _mm512_storeu_si512(a + j0, sub_if_ge8(v, vq));
            }
        }
#endif
        for (size_t j = j0; j < n; j++) {
            uint64_t v = a[j];
            v = v >= q2 ? v - q2 : v;
            a[j] = v >= q ? v - q : v;
        }
    }
}

/* Inverse of ntt_forward; irp/irps: psi^-bitrev(i); ninv/ninvs: n^-1 mod q and its Shoup.
 * Lazy Gentleman-Sande butterflies (values in [0, 2q)), reduced with the final scaling. */
void ntt_inverse(uint64_t *a, size_t count, size_t n, uint64_t q, const uint64_t *irp,
                 const uint64_t *irps, uint64_t ninv, uint64_t ninvs) {
    const uint64_t q2 = 2 * q;
    for (size_t c = 0; c < count; c++, a += n) {
        size_t t = 1;
        for (size_t m = n >> 1; m >= 1; m >>= 1) {
#ifdef SPLICE_AVX512
            if (t >= 8) {
                const __m512i vq = _mm512_set1_epi64((long long)q);
                const __m512i vq2 = _mm512_set1_epi64((long long)q2);
                for (size_t i = 0, j1 = 0; i < m; i++, j1 += 2 * t) {
                    const __m512i w = _mm512_set1_epi64((long long)irp[m + i]);
                    const __m512i ws = _mm512_set1_epi64((long long)irps[m + i]);
                    uint64_t *x = a + j1, *y = a + j1 + t;
                    for (size_t j = 0; j < t; j += 8) {
                        __m512i u = _mm512_loadu_si512(x + j), v = _mm512_loadu_si512(y + j);
                        _mm512_storeu_si512(x + j, sub_if_ge8(_mm512_add_epi64(u, v), vq2));
                        __m512i d = _mm512_add_epi64(_mm512_sub_epi64(u, v), vq2);
                        _mm512_storeu_si512(y + j, mul_shoup_lazy8(d, w, ws, vq));
                    }
                }
                t <<= 1;
                continue;
            }
            if (t < 8 && n >= 16) {
                ntt_small(a, t, m, q, irp, irps, 1);
                t <<= 1;
                continue;
            }
#endif
            size_t j1 = 0;
            for (size_t i = 0; i < m; i++) {
                uint64_t w = irp[m + i], ws = irps[m + i];
                uint64_t *x = a + j1, *y = a + j1 + t;
                for (size_t j = 0; j < t; j++) {
                    uint64_t u = x[j], v = y[j];
                    uint64_t s = u + v;
                    x[j] = s >= q2 ? s - q2 : s;
                    uint64_t d = u - v + q2;
                    y[j] = d * w - mulhi(d, ws) * q;
                }
                j1 += 2 * t;
            }
            t <<= 1;
        }
        size_t j0 = 0;
#ifdef SPLICE_AVX512
        {
            const __m512i vq = _mm512_set1_epi64((long long)q);
            const __m512i w = _mm512_set1_epi64((long long)ninv);
            const __m512i ws = _mm512_set1_epi64((long long)ninvs);
            for (; j0 + 8 <= n; j0 += 8) {
                __m512i v = mul_shoup_lazy8(_mm512_loadu_si512(a + j0), w, ws, vq);
                _mm512_storeu_si512(a + j0, sub_if_ge8(v, vq));
            }
        }
#endif
        for (size_t j = j0; j < n; j++) a[j] = mul_shoup(a[j], ninv, ninvs, q);
    }
}

/* Key switching for parameters of one data prime q and one special prime p > q, in three
 * steps as SEAL's switch_key_inplace computes it: `decompose` lifts the target (NTT form mod q)
 * to NTT form mod p; `ks_accumulate` adds its products with a key (k0q, k0p, k1q, k1p: NTT form,
 * 4n values, then their Shoup companions: 8n) to an accumulator (q0, p0, q1, p1: 4n values); `mod_down_add` divides the
 * accumulator by p with rounding and adds it to out0, out1 (NTT form mod q). Accumulating
 * several products before one division is hoisting: the sum of key switchings equals the key
 * switching of the sum.
 * Tables: qt/ptab = {rp, rps, irp, irps}; sc = {q, q_cr0, q_cr1, q_ninv, q_ninvs, p, p_cr0,
 * p_cr1, p_ninv, p_ninvs, pinv_mod_q, pinv_mod_q_shoup}. */
static void decompose(const uint64_t *tq, uint64_t *tp, size_t n, const uint64_t *const *qt,
                      const uint64_t *const *ptab, const uint64_t *sc) {
    for (size_t e = 0; e < n; e++) tp[e] = tq[e];
    ntt_inverse(tp, 1, n, sc[0], qt[2], qt[3], sc[3], sc[4]);
    ntt_forward(tp, 1, n, sc[5], ptab[0], ptab[1]); /* values below q < p */
}

static void ks_accumulate(const uint64_t *tq, const uint64_t *tp, const uint64_t *key,
                          uint64_t *acc, size_t n, const uint64_t *sc) {
    uint64_t q = sc[0], p = sc[5];
    for (int k = 0; k < 2; k++) {
        const uint64_t *kq = key + (size_t)(2 * k) * n, *kp = key + (size_t)(2 * k + 1) * n;
        const uint64_t *kqs = kq + 4 * n, *kps = kp + 4 * n; /* Shoup companions */
        uint64_t *aq = acc + (size_t)(2 * k) * n, *ap = acc + (size_t)(2 * k + 1) * n;
        size_t e0 = 0;
#ifdef SPLICE_AVX512
        const __m512i vq = _mm512_set1_epi64((long long)q), vp = _mm512_set1_epi64((long long)p);
        for (; e0 + 8 <= n; e0 += 8) {
            __m512i x = mul_shoup_lazy8(_mm512_loadu_si512(tq + e0), _mm512_loadu_si512(kq + e0),
                                        _mm512_loadu_si512(kqs + e0), vq);
            x = _mm512_add_epi64(sub_if_ge8(x, vq), _mm512_loadu_si512(aq + e0));
            _mm512_storeu_si512(aq + e0, sub_if_ge8(x, vq));
            __m512i y = mul_shoup_lazy8(_mm512_loadu_si512(tp + e0), _mm512_loadu_si512(kp + e0),
                                        _mm512_loadu_si512(kps + e0), vp);
            y = _mm512_add_epi64(sub_if_ge8(y, vp), _mm512_loadu_si512(ap + e0));
            _mm512_storeu_si512(ap + e0, sub_if_ge8(y, vp));
        }
#endif
        for (size_t e = e0; e < n; e++) {
            uint64_t x = mul_shoup(tq[e], kq[e], kqs[e], q) + aq[e];
            aq[e] = x >= q ? x - q : x;
            uint64_t y = mul_shoup(tp[e], kp[e], kps[e], p) + ap[e];
            ap[e] = y >= p ? y - p : y;
        }
    }
}

static void mod_down_add(uint64_t *acc, uint64_t *out0, uint64_t *out1, size_t n,
                         const uint64_t *const *qt, const uint64_t *const *ptab,
                         const uint64_t *sc) {
    uint64_t q = sc[0], p = sc[5];
    uint64_t half = p >> 1, half_q = half % q;
    for (int k = 0; k < 2; k++) {
        uint64_t *aq = acc + (size_t)(2 * k) * n, *ap = acc + (size_t)(2 * k + 1) * n;
        /* ((a mod q) - (a mod p, centred)) * p^-1 mod q */
        ntt_inverse(ap, 1, n, p, ptab[2], ptab[3], sc[8], sc[9]);
        size_t e0 = 0;
#ifdef SPLICE_AVX512
        const __m512i vq = _mm512_set1_epi64((long long)q), vp = _mm512_set1_epi64((long long)p);
        const __m512i vh = _mm512_set1_epi64((long long)half);
        const __m512i vqh = _mm512_set1_epi64((long long)(q - half_q));
        for (; e0 + 8 <= n; e0 += 8) {
            __m512i v = sub_if_ge8(_mm512_add_epi64(_mm512_loadu_si512(ap + e0), vh), vp);
            v = sub_if_ge8(sub_if_ge8(v, vq), vq); /* v < p < 3q */
            _mm512_storeu_si512(ap + e0, sub_if_ge8(_mm512_add_epi64(v, vqh), vq));
        }
#endif
        for (size_t e = e0; e < n; e++) {
            uint64_t v = ap[e] + half;
            v = v >= p ? v - p : v;
            while (v >= q) v -= q; /* v < p < 3q */
            ap[e] = v >= half_q ? v - half_q : v + q - half_q;
        }
        ntt_forward(ap, 1, n, q, qt[0], qt[1]);
        uint64_t *out = k == 0 ? out0 : out1;
        e0 = 0;
#ifdef SPLICE_AVX512
        const __m512i w = _mm512_set1_epi64((long long)sc[10]);
        const __m512i ws = _mm512_set1_epi64((long long)sc[11]);
        for (; e0 + 8 <= n; e0 += 8) {
            __m512i d = _mm512_sub_epi64(_mm512_add_epi64(_mm512_loadu_si512(aq + e0), vq),
                                         _mm512_loadu_si512(ap + e0));
            __m512i r = sub_if_ge8(mul_shoup_lazy8(sub_if_ge8(d, vq), w, ws, vq), vq);
            r = _mm512_add_epi64(r, _mm512_loadu_si512(out + e0));
            _mm512_storeu_si512(out + e0, sub_if_ge8(r, vq));
        }
#endif
        for (size_t e = e0; e < n; e++) {
            uint64_t d = aq[e] >= ap[e] ? aq[e] - ap[e] : aq[e] + q - ap[e];
            uint64_t r = mul_shoup(d, sc[10], sc[11], q) + out[e];
            out[e] = r >= q ? r - q : r;
        }
    }
}

#define BLOCK 512

/* out[p*n + e] = sum_i xs[i][p*n + e] * ws[i][e] mod q for p < polys, e < n. */
void mac(uint64_t *out, const uint64_t *const *xs, const uint64_t *const *ws, size_t k,
         size_t n, size_t polys, uint64_t q, uint64_t cr0, uint64_t cr1) {
    u128 acc[BLOCK];
    for (size_t p = 0; p < polys; p++) {
        for (size_t b = 0; b < n; b += BLOCK) {
            size_t len = n - b < BLOCK ? n - b : BLOCK;
            for (size_t e = 0; e < len; e++) acc[e] = 0;
            for (size_t i = 0; i < k; i++) {
                const uint64_t *x = xs[i] + p * n + b, *w = ws[i] + b;
                for (size_t e = 0; e < len; e++) acc[e] += (u128)x[e] * w[e];
            }
            for (size_t e = 0; e < len; e++) out[p * n + b + e] = reduce128(acc[e], q, cr0, cr1);
        }
    }
}

/* out[g] = sum over i in [starts[g], starts[g+1]) of xs[i] * ws[i] (see mac), g < groups;
 * xs, ws: addresses. */
void mac_groups(uint64_t *out, const uint64_t *xs, const uint64_t *ws, const int64_t *starts,
                size_t groups, size_t n, size_t polys, uint64_t q, uint64_t cr0, uint64_t cr1) {
    for (size_t g = 0; g < groups; g++)
        mac(out + g * polys * n, (const uint64_t *const *)(xs + starts[g]),
            (const uint64_t *const *)(ws + starts[g]), (size_t)(starts[g + 1] - starts[g]), n,
            polys, q, cr0, cr1);
}

/* outs[i] (2n each) = ct (2n, NTT form mod q) rotated by the Galois automorphism whose
 * NTT-form permutation is perms[i], for i < count, with keys[i]: one decomposition of ct's
 * second polynomial serves every rotation (the automorphism permutes NTT values modulo q and
 * modulo p alike). scratch: 8n values. */
void rotate_many(uint64_t *const *outs, const uint64_t *ct, const int64_t *const *perms,
                 const uint64_t *const *keys, size_t count, uint64_t *scratch, size_t n,
                 const uint64_t *const *qt, const uint64_t *const *ptab, const uint64_t *sc) {
    uint64_t *tp = scratch, *rq = scratch + n, *rp = scratch + 2 * n, *acc = scratch + 3 * n;
    decompose(ct + n, tp, n, qt, ptab, sc);
    for (size_t i = 0; i < count; i++) {
        const int64_t *perm = perms[i];
        uint64_t *out = outs[i];
        for (size_t e = 0; e < n; e++) {
            out[e] = ct[perm[e]];
            out[n + e] = 0;
            rq[e] = ct[n + perm[e]];
            rp[e] = tp[perm[e]];
        }
        for (size_t e = 0; e < 4 * n; e++) acc[e] = 0;
        ks_accumulate(rq, rp, keys[i], acc, n, sc);
        mod_down_add(acc, out, out + n, n, qt, ptab, sc);
    }
}

/* out (2n, NTT form mod q) += sum over i < count of cts[i] rotated by perms[i] with keys[i]
 * (perms[i] NULL: cts[i] as it is), with one division by p for the whole sum. scratch: 6n. */
void rotate_sum(uint64_t *out, const uint64_t *const *cts, const int64_t *const *perms,
                const uint64_t *const *keys, size_t count, uint64_t *scratch, size_t n,
                const uint64_t *const *qt, const uint64_t *const *ptab, const uint64_t *sc) {
    uint64_t q = sc[0];
    uint64_t *rq = scratch, *tp = scratch + n, *acc = scratch + 2 * n;
    int any = 0;
    for (size_t e = 0; e < 4 * n; e++) acc[e] = 0;
    for (size_t i = 0; i < count; i++) {
        const uint64_t *ct = cts[i];
        const int64_t *perm = perms[i];
        if (perm == NULL) {
            for (size_t e = 0; e < 2 * n; e++) {
                uint64_t v = out[e] + ct[e];
                out[e] = v >= q ? v - q : v;
            }
            continue;
        }
        for (size_t e = 0; e < n; e++) {
            uint64_t v = out[e] + ct[perm[e]];
            out[e] = v >= q ? v - q : v;
            rq[e] = ct[n + perm[e]];
        }
        decompose(rq, tp, n, qt, ptab, sc);
        ks_accumulate(rq, tp, keys[i], acc, n, sc);
        any = 1;
    }
    if (any) mod_down_add(acc, out, out + n, n, qt, ptab, sc);
}

/* ws[i] = floor(w[i] * 2^64 / m) (Shoup companions of a fixed operand, w[i] < m). */
void shoup_table(uint64_t *ws, const uint64_t *w, size_t len, uint64_t m) {
    for (size_t i = 0; i < len; i++) ws[i] = (uint64_t)(((u128)w[i] << 64) / m);
}

/* out = a + b mod q, element-wise (inputs in [0, q)). */
void add_mod(uint64_t *out, const uint64_t *a, const uint64_t *b, size_t len, uint64_t q) {
    for (size_t e = 0; e < len; e++) {
        uint64_t s = a[e] + b[e];
        out[e] = s >= q ? s - q : s;
    }
}

/* The last steps of encoding `count` real slot vectors packed two per complex row of `spec`
 * (pairs x n complex, interleaved doubles, already through the FFT): times `twist` (n complex,
 * scale included), rounded to integers, modulo q into rows 2p (real part) and 2p + 1 (imaginary
 * part) of `out` (count x n), then the NTT of every row. */
void encode_finish(uint64_t *out, const double *spec, const double *twist, size_t count,
                   size_t n, uint64_t q, const uint64_t *rp, const uint64_t *rps) {
    for (size_t r = 0; r < count; r += 2) {
        const double *z = spec + (r / 2) * 2 * n;
        uint64_t *re = out + r * n, *im = r + 1 < count ? out + (r + 1) * n : NULL;
        size_t k0 = 0;
#ifdef SPLICE_AVX512
        {
            const __m512i even = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
            const __m512i odd = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
            const __m512d sign = _mm512_set1_pd(-0.0), half = _mm512_set1_pd(0.5);
            const __m512i vq = _mm512_set1_epi64((long long)q), zero = _mm512_setzero_si512();
            for (; k0 + 8 <= n; k0 += 8) {
                __m512i v[2];
                for (int h = 0; h < 2; h++) { /* 4 complex values each */
                    __m512d zz = _mm512_loadu_pd(z + 2 * k0 + 8 * h);
                    __m512d tt = _mm512_loadu_pd(twist + 2 * k0 + 8 * h);
                    __m512d prod = _mm512_fmaddsub_pd(
                        zz, _mm512_movedup_pd(tt),
                        _mm512_mul_pd(_mm512_permute_pd(zz, 0x55), _mm512_permute_pd(tt, 0xFF)));
                    /* rounded half away from zero, as SEAL: truncate x + copysign(0.5, x) */
                    __m512d rounded = _mm512_add_pd(prod, _mm512_or_pd(_mm512_and_pd(prod, sign), half));
                    __m512i iv = _mm512_cvttpd_epi64(rounded);
                    v[h] = _mm512_mask_add_epi64(iv, _mm512_cmplt_epi64_mask(iv, zero), iv, vq);
                }
                _mm512_storeu_si512(re + k0, _mm512_permutex2var_epi64(v[0], even, v[1]));
                if (im) _mm512_storeu_si512(im + k0, _mm512_permutex2var_epi64(v[0], odd, v[1]));
            }
        }
#endif
        for (size_t k = k0; k < n; k++) {
            double a = z[2 * k], b = z[2 * k + 1], c = twist[2 * k], d = twist[2 * k + 1];
            double u = a * c - b * d, v = a * d + b * c; /* rounded half away, as SEAL */
            int64_t x = (int64_t)(u + (u >= 0 ? 0.5 : -0.5)), y = (int64_t)(v + (v >= 0 ? 0.5 : -0.5));
            re[k] = x < 0 ? (uint64_t)(x + (int64_t)q) : (uint64_t)x;
            if (im) im[k] = y < 0 ? (uint64_t)(y + (int64_t)q) : (uint64_t)y;
        }
    }
    ntt_forward(out, count, n, q, rp, rps);
}

static struct PyModuleDef kernel_module = {PyModuleDef_HEAD_INIT, "_kernel", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&kernel_module); }
