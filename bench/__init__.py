"""taskq's benchmarks: every figure measured for taskq and for bare RQ in the same
run, on the same machine, against a redis-server started from the project's own
redis.conf. `python -m bench` prints one table of absolute figures and ratios
(taskq / RQ); see docs/performance.md for how to read it. Benchmarks print, they
never assert timings."""
