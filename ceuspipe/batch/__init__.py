"""Cron batch runs over an inbox of new exams: pipeline files, ledger, lock, runner.

``ceuspipe run PIPELINE.toml`` processes every new or changed exam exactly once
(:func:`ceuspipe.batch.runner.run_pipeline`); ``ceuspipe status OUT`` reads the
ledger (:func:`ceuspipe.batch.status.read_status`).
"""
