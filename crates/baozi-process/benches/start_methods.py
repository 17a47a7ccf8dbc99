"""CPython's start methods, in the shapes of benches/start.rs (run on the same machine):
start+join of a trivial Process one at a time, Pool(2) start, apply one at a time, and
map with chunksize 1; time per unit, best of 3 passes. Run: python3 benches/start_methods.py"""
import multiprocessing as mp
import time

CHILDREN = {"fork": 200, "spawn": 20, "forkserver": 100}
APPLIES = 5000
ITEMS = 20000


def nothing():
    pass


def inc(x):
    return x + 1


def best(f):
    return min(f() for _ in range(3))


def main():
    print(f"{'method':<11} {'start+join':>14} {'pool start':>14} {'pool apply':>14} {'pool map cs=1':>16}")
    for m in ("fork", "spawn", "forkserver"):
        ctx = mp.get_context(m)
        n = CHILDREN[m]

        def start_join():
            t = time.perf_counter()
            for _ in range(n):
                p = ctx.Process(target=nothing)
                p.start()
                p.join()
            return (time.perf_counter() - t) / n

        def pool_start():
            t = time.perf_counter()
            for _ in range(3):
                with ctx.Pool(2) as pool:
                    pool.apply(inc, (1,))  # the workers are up
            return (time.perf_counter() - t) / 3

        sj = best(start_join)
        ps = best(pool_start)
        with ctx.Pool(2) as pool:
            pool.apply(inc, (1,))

            def apply():
                t = time.perf_counter()
                for i in range(APPLIES):
                    pool.apply(inc, (i,))
                return (time.perf_counter() - t) / APPLIES

            def pmap():
                t = time.perf_counter()
                pool.map(inc, range(ITEMS), chunksize=1)
                return (time.perf_counter() - t) / ITEMS

            ap = best(apply)
            mp_ = best(pmap)
        print(f"{m:<11} {sj*1e6:>11.1f} µs {ps*1e6:>11.1f} µs {ap*1e6:>11.2f} µs {mp_*1e6:>13.2f} µs")


if __name__ == "__main__":
    main()
