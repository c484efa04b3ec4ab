/* The Mamba block's CPU kernels as plain C loops (loaded by scan_cpu.py):
     scan_forward / scan_backward     the selective scan with softplus, D skip and silu(z) gate
     conv_forward / conv_backward     the causal depthwise conv + SiLU in front of it
     block_step                       the recurrent step of the block's middle, for inference

   Why C: the scan does a few multiply-adds per (batch, time, channel, state) element. Vectorised
   PyTorch writes each intermediate -- exp(delta A), the drive, the states, their products -- to
   memory as a full (L, B, N, D) tensor, about twenty passes in all, and a dozen more (B, L, D)
   passes for softplus, the D skip and the gate. Here one batch row at a time is done in three
   loops whose data stay in the CPU's caches: a pre-pass over (t, d) for the step sizes, the scan
   over each channel d with its N states in registers, and a post-pass for skip and gate.

   Per batch row b (d: channel, n: state index, t: time; A < 0):
     delta_t  = softplus(delta_t + delta_bias)                  (softplus optional)
     h_t      = exp(delta_t A) * h_{t-1} + delta_t u_t B_t       h_{-1} = 0, over n
     y_t      = <h_t, C_t> + D u_t
     out_t    = y_t * silu(z_t)                                  (gate optional)
   Backward, with g_h_t = dLoss/dh_t, decay_t = exp(delta_t A), g_y_t = g_out_t * silu(z_t):
     g_h_t    = g_y_t C_t + decay_{t+1} g_h_{t+1}                (a scan backwards in time)
     g_C_t   += g_y_t h_t          g_B_t += g_h_t delta_t u_t    (summed over channels d)
     e_t      = g_h_t decay_t h_{t-1}                            (gradient of delta_t A)
     g_u_t    = delta_t <g_h_t, B_t> + D g_y_t
     g_delta_t = (<e_t, A> + u_t <g_h_t, B_t>) * sigmoid(delta_t + bias)   (softplus')
     g_A     += e_t delta_t        g_D += g_y_t u_t              g_z_t = g_out_t y_t silu'(z_t)

   D and delta_bias are always given (zeros stand in for a missing one); z may be NULL.
   Layouts: float32; (B, L, X) tensors are read as rows: element (b, t, i) at
   x[(b * L + t) * stride + i], so views like `xz[..., :d]` need no copy; outputs are contiguous.
   g_B and g_C are accumulated into (the caller zeroes them); g_A, g_D and g_delta_bias are
   written per batch row, (B, D, N) and (B, D), and summed over B by the caller, so that threads
   of different rows never write to the same place: rows run in parallel, results are the same
   for any number of threads.
*/
#include <stddef.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#define THREAD_ID omp_get_thread_num()
#else
#define THREAD_ID 0
#endif

#define MAX_N 64   /* a channel's state lives in a local array: d_state up to 64 */

/* ----- elementwise maths, written out so the compiler can inline and vectorise it ---------- */

/* exp(x) = 2^k * 2^f with k = round(x log2 e), |f| <= 1/2; 2^f = e^(f ln 2) by its Taylor series
   to degree 6 (relative error < 2e-7, about one float rounding); the 2^k goes into the float's
   exponent bits. x is clamped to [-87, 88], where floats stay normal and finite. */
static inline float exp_approx(float x) {
    x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
    const float k = __builtin_rintf(x * 1.44269504f);       /* log2(e) */
    const float r = x - k * 0.693147181f;                   /* f ln 2, |r| <= 0.347 */
    float p = 1.f / 720.f;
    p = p * r + 1.f / 120.f;
    p = p * r + 1.f / 24.f;
    p = p * r + 1.f / 6.f;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
    union { float f; int32_t i; } bits = { p };
    bits.i += (int32_t)k << 23;                             /* times 2^k */
    return bits.f;
}

/* log(1 + v) for v in [0, 1]: with s = v / (2 + v) <= 1/3, log(1 + v) = 2 atanh(s)
   = 2 (s + s^3/3 + s^5/5 + ...); seven terms leave a relative error below 1e-7. */
static inline float log1p_unit(float v) {
    const float s = v / (2.f + v), s2 = s * s;
    float p = 1.f / 13.f;
    p = p * s2 + 1.f / 11.f;
    p = p * s2 + 1.f / 9.f;
    p = p * s2 + 1.f / 7.f;
    p = p * s2 + 1.f / 5.f;
    p = p * s2 + 1.f / 3.f;
    p = p * s2 + 1.f;
    return 2.f * s * p;
}

static inline float softplus(float x) {                    /* log(1 + e^x), overflow-free */
    const float ax = x < 0.f ? -x : x;
    return (x > 0.f ? x : 0.f) + log1p_unit(exp_approx(-ax));
}

static inline float sigmoid(float x) { return 1.f / (1.f + exp_approx(-x)); }

/* ----- the scan of one channel ----------------------------------------------------------- */

/* Forward of one channel over L steps: y[t * sy] = <h_t, C_t>. u is read with stride su, the
   step sizes dt with stride sdt, B and C rows with strides sb, sc. `static inline` with N a
   constant at the call site (16 below) lets the compiler unroll and vectorise the n-loops. */
static inline void channel_forward(const float *restrict u, int64_t su,
                                   const float *restrict dt, int64_t sdt,
                                   const float *restrict a, const float *restrict Bm, int64_t sb,
                                   const float *restrict C, int64_t sc, float *restrict y,
                                   int64_t sy, int L, int N) {
    float h[MAX_N] = {0};
    for (int t = 0; t < L; t++) {
        const float step = dt[(size_t)t * sdt], drive = step * u[(size_t)t * su];
        const float *b_t = Bm + (size_t)t * sb, *c_t = C + (size_t)t * sc;
        float acc = 0.f;
        for (int n = 0; n < N; n++) {
            h[n] = exp_approx(step * a[n]) * h[n] + drive * b_t[n];
            acc += h[n] * c_t[n];
        }
        y[(size_t)t * sy] = acc;
    }
}

/* Backward of one channel. First the forward again, keeping every decay and state in hist
   (2 L N floats, in cache) and y_t = <h_t, C_t> in y; then the gradient's recurrence from
   t = L - 1 down to 0. g_y: gradient of <h_t, C_t>; writes g_u (without the D term) and g_dt
   (gradient of the step size after softplus); adds into the g_B, g_C rows and g_a[0:N].
   Its first loop is channel_forward's, written out again on purpose: sharing channel_forward
   (with an optional pointer for the history) made this backward ~1.8x slower with gcc 12 in a
   one-off A/B of the two builds (not kept as a benchmark). */
static inline void channel_backward(const float *restrict u, int64_t su,
                                    const float *restrict dt, int64_t sdt,
                                    const float *restrict a, const float *restrict Bm, int64_t sb,
                                    const float *restrict C, int64_t sc,
                                    const float *restrict g_y, int64_t sg, float *restrict y,
                                    float *restrict g_u, float *restrict g_dt,
                                    float *restrict g_B, float *restrict g_C, int64_t sgb,
                                    float *restrict g_a, float *restrict hist, int L, int N) {
    float h[MAX_N] = {0}, zeros[MAX_N] = {0}, g_h[MAX_N] = {0};
    float *decays = hist, *states = hist + (size_t)L * N;
    for (int t = 0; t < L; t++) {
        const float step = dt[(size_t)t * sdt], drive = step * u[(size_t)t * su];
        const float *b_t = Bm + (size_t)t * sb, *c_t = C + (size_t)t * sc;
        float *decay = decays + (size_t)t * N, *state = states + (size_t)t * N;
        float acc = 0.f;
        for (int n = 0; n < N; n++) {
            decay[n] = exp_approx(step * a[n]);
            h[n] = decay[n] * h[n] + drive * b_t[n];
            state[n] = h[n];
            acc += h[n] * c_t[n];
        }
        y[(size_t)t * sg] = acc;
    }
    for (int t = L - 1; t >= 0; t--) {
        const float step = dt[(size_t)t * sdt], u_t = u[(size_t)t * su], drive = step * u_t;
        const float gy = g_y[(size_t)t * sg];
        const float *b_t = Bm + (size_t)t * sb, *c_t = C + (size_t)t * sc;
        const float *decay = decays + (size_t)t * N, *state = states + (size_t)t * N;
        const float *prev = t > 0 ? state - N : zeros;           /* h_{t-1} */
        float *gb_t = g_B + (size_t)t * sgb, *gc_t = g_C + (size_t)t * sgb;
        float g_drive = 0.f, g_step = 0.f;
        for (int n = 0; n < N; n++) {
            g_h[n] += gy * c_t[n];                               /* now the whole g_h_t */
            gc_t[n] += gy * state[n];
            gb_t[n] += g_h[n] * drive;
            g_drive += g_h[n] * b_t[n];
            const float e = g_h[n] * decay[n] * prev[n];
            g_step += e * a[n];
            g_a[n] += e * step;
            g_h[n] *= decay[n];                                  /* carried to step t - 1 */
        }
        g_u[(size_t)t * sg] = g_drive * step;
        g_dt[(size_t)t * sg] = g_step + g_drive * u_t;
    }
}

/* ----- one batch row: pre-pass, channels, post-pass --------------------------------------- */

typedef struct {           /* the inputs of a call; strides are row strides of (B, L, X) views */
    const float *u, *delta, *delta_bias, *A, *Bm, *C, *D, *z;
    int64_t su, sdelta, sb, sc, sz;
    int L, Dch, N, softplus;
} ScanArgs;

/* Step sizes of row b into dt (L x Dch, contiguous): softplus(delta + bias) as configured. */
static inline void step_sizes(const ScanArgs *p, int b, float *restrict dt) {
    for (int t = 0; t < p->L; t++) {
        const float *raw = p->delta + ((size_t)b * p->L + t) * p->sdelta;
        float *row = dt + (size_t)t * p->Dch;
        for (int d = 0; d < p->Dch; d++) {
            const float x = raw[d] + p->delta_bias[d];
            row[d] = p->softplus ? softplus(x) : x;
        }
    }
}

static inline void forward_row(const ScanArgs *p, int b, float *out, float *dt, int N) {
    const int L = p->L, Dch = p->Dch;
    const float *u = p->u + (size_t)b * L * p->su;
    step_sizes(p, b, dt);
    float *y = out + (size_t)b * L * Dch;
    for (int d = 0; d < Dch; d++)
        channel_forward(u + d, p->su, dt + d, Dch, p->A + (size_t)d * N,
                        p->Bm + (size_t)b * L * p->sb, p->sb, p->C + (size_t)b * L * p->sc, p->sc,
                        y + d, Dch, L, N);
    for (int t = 0; t < L; t++) {                            /* skip and gate, over (t, d) */
        float *y_t = y + (size_t)t * Dch;
        const float *u_t = u + (size_t)t * p->su;
        const float *z_t = p->z ? p->z + ((size_t)b * L + t) * p->sz : NULL;
        for (int d = 0; d < Dch; d++) {
            const float v = y_t[d] + p->D[d] * u_t[d];
            y_t[d] = z_t ? v * z_t[d] * sigmoid(z_t[d]) : v;
        }
    }
}

/* out (B, L, Dch) contiguous; scratch: L * Dch floats per thread. Batch rows are shared out
   among `threads` OpenMP threads (torch's own pool: the loader reuses its libgomp). */
void scan_forward(const ScanArgs *p, float *out, float *scratch, int batch, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int b = 0; b < batch; b++) {
        float *mine = scratch + (size_t)THREAD_ID * p->L * p->Dch;
        if (p->N == 16)    /* the default d_state: a constant the compiler specialises for */
            forward_row(p, b, out, mine, 16);
        else
            forward_row(p, b, out, mine, p->N);
    }
}

typedef struct {           /* the outputs of the backward; all contiguous */
    float *g_u, *g_delta, *g_z, *g_B, *g_C;                 /* (B, L, .)          */
    float *g_A_rows, *g_D_rows, *g_bias_rows;               /* (B, Dch, N), (B, Dch) */
} ScanGrads;

/* One time step of the backward's post-pass, over channels d: the D skip, the gate and the
   softplus terms of the gradients (restrict: these rows never overlap). */
static inline void output_grads(int Dch, const float *restrict skip, const float *restrict bias,
                                const float *restrict u_t, const float *restrict z_t,
                                const float *restrict raw, const float *restrict go,
                                const float *restrict g_y, const float *restrict y,
                                float *restrict g_u, float *restrict g_dt, float *restrict g_z,
                                float *restrict g_D, float *restrict g_bias, int use_softplus) {
    for (int d = 0; d < Dch; d++) {       /* (one branch-free loop per term: vectorised) */
        g_u[d] += skip[d] * g_y[d];
        g_D[d] += g_y[d] * u_t[d];
    }
    if (z_t)                                /* silu'(z) = sig(z) (1 + z (1 - sig(z))) */
        for (int d = 0; d < Dch; d++) {
            const float s = sigmoid(z_t[d]);
            g_z[d] = go[d] * (y[d] + skip[d] * u_t[d]) * s * (1.f + z_t[d] * (1.f - s));
        }
    if (use_softplus)                       /* softplus'(x) = sigmoid(x) */
        for (int d = 0; d < Dch; d++)
            g_dt[d] *= sigmoid(raw[d] + bias[d]);
    for (int d = 0; d < Dch; d++)
        g_bias[d] += g_dt[d];
}

static inline void backward_row(const ScanArgs *p, const float *g_out, const ScanGrads *g, int b,
                                float *scratch, int N) {
    const int L = p->L, Dch = p->Dch;
    const size_t row = (size_t)b * L;
    const float *u = p->u + row * p->su, *go = g_out + row * Dch;
    float *dt = scratch, *g_y = dt + (size_t)L * Dch, *y = g_y + (size_t)L * Dch;
    float *hist = y + (size_t)L * Dch;
    float *g_u = g->g_u + row * Dch, *g_dt = g->g_delta + row * Dch;
    step_sizes(p, b, dt);
    for (int t = 0; t < L; t++) {                            /* g_y = g_out * silu(z) */
        const float *z_t = p->z ? p->z + (row + t) * p->sz : NULL;
        for (int d = 0; d < Dch; d++) {
            const float gv = go[(size_t)t * Dch + d];
            g_y[(size_t)t * Dch + d] = z_t ? gv * z_t[d] * sigmoid(z_t[d]) : gv;
        }
    }
    float *g_a = g->g_A_rows + (size_t)b * Dch * N;
    for (int i = 0; i < Dch * N; i++)
        g_a[i] = 0.f;
    for (int d = 0; d < Dch; d++)
        channel_backward(u + d, p->su, dt + d, Dch, p->A + (size_t)d * N, p->Bm + row * p->sb,
                         p->sb, p->C + row * p->sc, p->sc, g_y + d, Dch, y + d, g_u + d, g_dt + d,
                         g->g_B + row * N, g->g_C + row * N, N, g_a + (size_t)d * N, hist, L, N);
    float *g_D = g->g_D_rows + (size_t)b * Dch, *g_bias = g->g_bias_rows + (size_t)b * Dch;
    for (int d = 0; d < Dch; d++)
        g_D[d] = g_bias[d] = 0.f;
    for (int t = 0; t < L; t++) {
        const size_t i = (size_t)t * Dch;
        output_grads(Dch, p->D, p->delta_bias, u + (size_t)t * p->su,
                     p->z ? p->z + (row + t) * p->sz : NULL, p->delta + (row + t) * p->sdelta,
                     go + i, g_y + i, y + i, g_u + i, g_dt + i,
                     p->z ? g->g_z + (row + t) * Dch : NULL, g_D, g_bias, p->softplus);
    }
}

/* scratch: 3 L Dch + 2 L N floats per thread; g_B and g_C zeroed by the caller. */
void scan_backward(const ScanArgs *p, const float *g_out, const ScanGrads *g, float *scratch,
                   int batch, int threads) {
    const size_t per_thread = 3 * (size_t)p->L * p->Dch + 2 * (size_t)p->L * p->N;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int b = 0; b < batch; b++) {
        float *mine = scratch + (size_t)THREAD_ID * per_thread;
        if (p->N == 16)
            backward_row(p, g_out, g, b, mine, 16);
        else
            backward_row(p, g_out, g, b, mine, p->N);
    }
}

/* ----- the causal depthwise conv + SiLU that feeds the scan ------------------------------ */

/* pre_t = bias + sum_k w_k x_{t - (K-1) + k} (x_s = 0 for s < 0), out_t = silu(pre_t), for
   channels d in parallel. x: (B, L, Dch) rows with stride sx; w: (K, Dch), the conv1d weight
   transposed; out (B, L, Dch) contiguous. Per batch row: one pass, vectorised over d. */
static inline void conv_pre_row(const float *restrict x, int64_t sx, const float *restrict w,
                                const float *restrict bias, float *restrict pre, int L, int Dch,
                                int K) {
    for (int t = 0; t < L; t++) {
        float *p_t = pre + (size_t)t * Dch;
        for (int d = 0; d < Dch; d++)
            p_t[d] = bias[d];
        for (int k = 0; k < K; k++) {
            const int s = t - (K - 1) + k;
            if (s < 0)
                continue;
            const float *x_s = x + (size_t)s * sx, *w_k = w + (size_t)k * Dch;
            for (int d = 0; d < Dch; d++)
                p_t[d] += w_k[d] * x_s[d];
        }
    }
}

void conv_forward(const float *x, int64_t sx, const float *w, const float *bias, float *out,
                  int batch, int L, int Dch, int K, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int b = 0; b < batch; b++) {
        float *o = out + (size_t)b * L * Dch;
        conv_pre_row(x + (size_t)b * L * sx, sx, w, bias, o, L, Dch, K);
        for (size_t i = 0; i < (size_t)L * Dch; i++)
            o[i] *= sigmoid(o[i]);
    }
}

/* Gradients of conv_forward given g_out (contiguous): g_x (contiguous), and per batch row
   g_w_rows (B, K, Dch) and g_bias_rows (B, Dch), summed over B by the caller. scratch: L Dch
   floats per thread (the recomputed pre-activation, then its gradient). */
void conv_backward(const float *x, int64_t sx, const float *w, const float *bias,
                   const float *g_out, float *g_x, float *g_w_rows, float *g_bias_rows,
                   float *scratch, int batch, int L, int Dch, int K, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int b = 0; b < batch; b++) {
        const float *x_b = x + (size_t)b * L * sx, *go = g_out + (size_t)b * L * Dch;
        float *g_pre = scratch + (size_t)THREAD_ID * L * Dch, *gx = g_x + (size_t)b * L * Dch;
        float *g_w = g_w_rows + (size_t)b * K * Dch, *g_bias = g_bias_rows + (size_t)b * Dch;
        conv_pre_row(x_b, sx, w, bias, g_pre, L, Dch, K);
        for (size_t i = 0; i < (size_t)L * Dch; i++) {       /* silu'(p) = s (1 + p (1 - s)) */
            const float p = g_pre[i], s = sigmoid(p);
            g_pre[i] = go[i] * s * (1.f + p * (1.f - s));
        }
        for (size_t i = 0; i < (size_t)K * Dch; i++)
            g_w[i] = 0.f;
        for (int d = 0; d < Dch; d++)
            g_bias[d] = 0.f;
        for (int s = 0; s < L; s++) {          /* x_s feeds pre_{s + (K-1) - k} through w_k */
            const float *x_s = x_b + (size_t)s * sx, *gp_s = g_pre + (size_t)s * Dch;
            float *gx_s = gx + (size_t)s * Dch;
            for (int d = 0; d < Dch; d++) {
                gx_s[d] = 0.f;
                g_bias[d] += gp_s[d];
            }
            for (int k = 0; k < K; k++) {
                const int t = s + (K - 1) - k;
                if (t >= L)
                    continue;
                const float *gp_t = g_pre + (size_t)t * Dch, *w_k = w + (size_t)k * Dch;
                float *gw_k = g_w + (size_t)k * Dch;
                for (int d = 0; d < Dch; d++) {
                    gx_s[d] += gp_t[d] * w_k[d];
                    gw_k[d] += gp_t[d] * x_s[d];
                }
            }
        }
    }
}

/* ----- the recurrent step of a whole Mamba block's middle, for inference ----------------- */

/* At batch 1 an op costs its launch overhead whatever its size, and the block's middle is some
   twenty small ops per token; here it is one call. For each batch row and each of T new tokens
   (xz: in_proj's output, (B, T, 2 Dch) contiguous, x then z):
     x      = silu(conv1d over the last K inputs: conv_in's K-1 and the new ones)
     dt, B, C = x_proj x (R, N, N)      delta = softplus(dt_proj dt + dt_bias)
     h      = exp(delta A) h + delta x B       y = (<h, C> + D x) * silu(z)
   Caches in, (B, Dch, K-1) and (B, Dch, N), are read only; the new ones are written to the
   *_out arrays; y (B, T, Dch). Weights: conv_w (Dch, K), conv_b, dt_bias, D (Dch), x_proj
   (R + 2N, Dch), dt_proj (Dch, R), A (Dch, N) = -exp(A_log). */
typedef struct {
    const float *conv_w, *conv_b, *x_proj, *dt_proj, *dt_bias, *A, *D;
    int Dch, N, R, K;
} StepArgs;

static inline float dot(const float *restrict a, const float *restrict b, int n) {
    float acc = 0.f;
    for (int i = 0; i < n; i++)
        acc += a[i] * b[i];
    return acc;
}

static void step_row(const StepArgs *p, const float *restrict xz, const float *restrict conv_in,
                     const float *restrict h_in, float *restrict y, float *restrict conv_out,
                     float *restrict h, float *restrict scratch, int T) {
    // hidden 6: begin
    const int Dch = p->Dch, N = p->N, R = p->R, K = p->K;
    float *x = scratch, *proj = x + (size_t)T * Dch, *delta = proj + R + 2 * N;
    for (int d = 0; d < Dch; d++) {                 /* conv + silu of every new token */
        const float *w = p->conv_w + (size_t)d * K, *past = conv_in + (size_t)d * (K - 1);
        for (int t = 0; t < T; t++) {
            float acc = p->conv_b[d];
            for (int k = 0; k < K; k++) {           /* input t - (K-1) + k of the window */
                const int s = t - (K - 1) + k;
                acc += w[k] * (s < 0 ? past[K - 1 + s] : xz[(size_t)s * 2 * Dch + d]);
            }
            x[(size_t)t * Dch + d] = acc * sigmoid(acc);
        }
        for (int k = 0; k < K - 1; k++) {           /* the window's last K-1 inputs */
            const int s = T - (K - 1) + k;
            conv_out[(size_t)d * (K - 1) + k] =
                s < 0 ? past[K - 1 + s] : xz[(size_t)s * 2 * Dch + d];
        }
    }
    for (size_t i = 0; i < (size_t)Dch * N; i++)
        h[i] = h_in[i];
    for (int t = 0; t < T; t++) {
        const float *x_t = x + (size_t)t * Dch, *z_t = xz + (size_t)t * 2 * Dch + Dch;
        for (int j = 0; j < R + 2 * N; j++)         /* x_proj: dt (R), B (N), C (N) */
            proj[j] = dot(p->x_proj + (size_t)j * Dch, x_t, Dch);
        const float *B = proj + R, *C = proj + R + N;
        for (int d = 0; d < Dch; d++)
            delta[d] = softplus(dot(p->dt_proj + (size_t)d * R, proj, R) + p->dt_bias[d]);
        for (int d = 0; d < Dch; d++) {
            float *h_d = h + (size_t)d * N;
            const float *a = p->A + (size_t)d * N;
            const float step = delta[d], drive = step * x_t[d];
            float acc = 0.f;
            for (int n = 0; n < N; n++) {
                h_d[n] = exp_approx(step * a[n]) * h_d[n] + drive * B[n];
                acc += h_d[n] * C[n];
            }
            const float v = acc + p->D[d] * x_t[d];
            y[(size_t)t * Dch + d] = v * z_t[d] * sigmoid(z_t[d]);
        }
    }
    // hidden 6: end
}

/* scratch: T Dch + R + 2N + Dch floats per thread. */
void block_step(const StepArgs *p, const float *xz, const float *conv_in, const float *h_in,
                float *y, float *conv_out, float *h_out, float *scratch, int batch, int T,
                int threads) {
    const int Dch = p->Dch, N = p->N, K = p->K;
    const size_t per_thread = (size_t)T * Dch + p->R + 2 * (size_t)N + Dch;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int b = 0; b < batch; b++)
        step_row(p, xz + (size_t)b * T * 2 * Dch, conv_in + (size_t)b * Dch * (K - 1),
                 h_in + (size_t)b * Dch * N, y + (size_t)b * T * Dch,
                 conv_out + (size_t)b * Dch * (K - 1), h_out + (size_t)b * Dch * N,
                 scratch + (size_t)THREAD_ID * per_thread, T);
}
