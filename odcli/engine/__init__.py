"""Training: :class:`~odcli.engine.trainer.Trainer` and the parts it composes.

``trainer`` (the loop and the step) · ``parts`` (datasets, model, loader, optimiser, schedule, EMA,
AMP, built from the recipe) · ``ddp`` (processes, seeds, the DDP-wrapped loss) · ``state``
(counters, save and resume) · ``stopping`` (signals, rank agreement, NaN guard) · ``feed`` (each
epoch's batches) · ``report`` and ``console`` (header, progress, ``train.log``) · ``hooks`` (what
commands add: pictures, plots) · ``metrics_log``, ``run_dir``, ``schedules``, ``ema``, ``rng_state``.
"""
