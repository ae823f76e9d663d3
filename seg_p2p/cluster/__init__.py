"""The study on a cluster: every out-of-date DVC stage one scheduler job, DVC's own DAG as the jobs' dependencies.

DVC owns the pipeline (what exists, what is out of date, how each stage runs: `plan`); an executor owns the
waiting (`executors`: SLURM's `afterok` dependencies, one GPU and its own CPUs per job, or one local job running
`dvc repro`); `submission` submits the plan through it and records the jobs; the jobs run each stage's own `cmd`
as `dvc repro` would (`jobs`), and a last job records every stage in dvc.lock with `dvc commit`, so `dvc repro`,
`dvc metrics show` and `dvc exp show` see the results. `client` ties it together for the CLI
(`seg-p2p cluster run | status`), `workspace` gives each experiment of a sweep a workspace of its own.
"""
