"""KFP component: benchmarks and the run's report (`vidssl.stages.bench`)."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def bench(
    config_json: str,
    trained_url: str,
    random_url: str,
    imagenet_url: str,
    clips_url: str,
    run_id: str,
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.Markdown],
    page: dsl.Output[dsl.HTML],
) -> str:
    """Scores the trained encoder's embeddings and the baselines'; returns the report's URL."""
    import logging

    from vidssl.config import experiment_from_json
    from vidssl.stages import bench as stage
    from vidssl.stages.base import store_for

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    experiment = experiment_from_json(config_json)
    exports = {f"{experiment.train.pairing} ({experiment.train.objective})": trained_url}
    for name, url in (("random embeddings", random_url), ("imagenet embeddings", imagenet_url)):
        if url:
            exports[name] = url
    result = stage.run(experiment, exports, run_id or None, clips_url=clips_url or None)
    for name, model in result["models"].items():
        tag = name.split(" ")[0]
        if "pose" in model:
            pose = model["pose"]["1"]
            metrics.log_metric(f"{tag}_3d_map", pose["3d_map"])
            metrics.log_metric(
                f"{tag}_iou_over_0.5_pooled", pose["pooled"]["fraction_iou_over_0.5"]
            )
            metrics.log_metric(f"{tag}_reid_map", model["reid_map"])
            metrics.log_metric(f"{tag}_category_accuracy", model["category_accuracy"])
        for key, value in model.get("retrieval", {}).items():
            metrics.log_metric(f"{tag}_{key}", value)
    store = store_for(experiment)
    with open(report.path, "w") as handle:
        handle.write(store.get_text(store.key_of(result["report_url"])))
    with open(page.path, "w") as handle:  # the Kubeflow UI renders this one
        handle.write(store.get_text(store.key_of(result["report_html_url"])))
    return result["report_url"]
