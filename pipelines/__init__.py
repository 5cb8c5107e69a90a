"""KFP pipelines: one generic pipeline (`pipelines.experiment.build`) whose tasks come from the
experiment's stage graph, its runner (`pipelines.run`) and the cluster settings of its tasks."""
