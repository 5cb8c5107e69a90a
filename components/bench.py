"""KFP component: benchmarks and the run's report (`vidssl.stages.bench`)."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def bench(
    config_json: str,
    exports: dict[str, str],
    clips_url: str,
    run_id: str,
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.Markdown],
    page: dsl.Output[dsl.HTML],
    tracks_url: str = "",
) -> str:
    """Scores every export (label -> embedding URL: the trained model's and the baselines',
    `vidssl.stages.graph`); returns the report's URL. `tracks_url`: the flow stage's output,
    whose test tracks are the dense correspondence truth where the clips carry no flow."""
    import logging

    from vidssl.config import experiment_from_json
    from vidssl.stages import bench as stage
    from vidssl.stages.base import store_for

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    experiment = experiment_from_json(config_json)
    result = stage.run(
        experiment, exports, run_id or None, clips_url=clips_url or None, tracks_url=tracks_url
    )
    for name, value in stage.kfp_metrics(result).items():
        metrics.log_metric(name, value)
    store = store_for(experiment)
    with open(report.path, "w") as handle:
        handle.write(store.get_text(store.key_of(result["report_url"])))
    with open(page.path, "w") as handle:  # the Kubeflow UI renders this one
        handle.write(store.get_text(store.key_of(result["report_html_url"])))
    return result["report_url"]
