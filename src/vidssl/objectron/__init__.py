"""Objectron: the annotation format (protobuf), the dataset layout, geometry helpers."""
