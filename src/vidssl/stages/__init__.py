"""Pipeline stages: plain functions `run(experiment, ...)` that read and write stage outputs."""
