"""Procedural datasets: pictures made from a seed, with exact labels (nothing to download)."""

from .shapes import (CLASSES, Instance, Scene, generate_scene, generate_single, scene_rng,
                     write_classification, write_detection, write_segmentation)

__all__ = ["CLASSES", "Instance", "Scene", "generate_scene", "generate_single", "scene_rng",
           "write_classification", "write_detection", "write_segmentation"]
