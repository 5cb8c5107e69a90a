"""Optical flow for PiCo: estimators, flow codec, point tracks and anchor sampling."""
