"""The trainer: answers retrain requests with a validated model, or with a reason.

The core, pure apart from fitting and the registry's files:

* :mod:`~stream_monitor.trainer.settings`: what to train per model, when to promote;
* :mod:`~stream_monitor.trainer.dataset`: labelled examples to a time-ordered
  training set and holdout (pure);
* :mod:`~stream_monitor.trainer.decision`: champion/challenger and the retrain
  budget (pure);
* :mod:`~stream_monitor.trainer.training`: fit, score, decide, and the events that
  say so (pure apart from the fit), plus :func:`~stream_monitor.trainer.training.handle_request`
  which wraps it in the registry for at-most-once handling;
* :mod:`~stream_monitor.trainer.registry`: versioned artefacts on disk, the
  production pointer and the journal of handled requests.

The shell: :mod:`~stream_monitor.trainer.service` (Kafka in and out, commits),
:mod:`~stream_monitor.trainer.metrics` (Prometheus) and
:mod:`~stream_monitor.trainer.cli` (the ``trainer`` subcommand).
"""
