"""Synthetic Objectron: short videos of textured objects filmed by a hand-held-like camera
orbiting them, written in Objectron's real layout and formats, with exact ground truth.

    videos/<class>/batch-<i>/<j>/video.MOV       MPEG-4 video
    annotations/<class>/batch-<i>/<j>.pbdata     annotation_data.Sequence (protobuf)
    masks/<class>/batch-<i>/<j>.npy              per-frame object masks, np.packbits along x
    flow/<class>/batch-<i>/<j>.npz               only with `flow_step`: ground-truth optical
                                                  flow, validity and category masks (synth.flow)
    index/<class>_annotations_{train,test}        sequence ids, one per line

Every video draws from its own generator seeded by (seed, category, index): the same seed
gives the same bytes whatever the order or the number of processes. Like the real data, some
videos carry defects the cleaning stage must remove: the camera swings away so the object
leaves the frame for a while, some bike videos are over-blurred (the real ones went through a
privacy filter), and some raw annotations name the wrong category.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from vidssl.objectron.geometry import (
    box_points,
    intrinsics_matrix,
    look_at,
    project_normalized,
    projection_matrix,
    rotation_about_y,
    world_to_camera,
)
from vidssl.objectron.schema import annotation_data_pb2, object_pb2
from vidssl.progress import track
from vidssl.synth.flow import FrameGeometry, flow_file_key, write_flow_file
from vidssl.synth.render import Camera, Lighting, SurfaceMap, render
from vidssl.synth.shapes import (
    CATEGORIES,
    Face,
    build_mesh,
    floor_texture,
    mesh_extent,
    object_texture,
)

VIDEOS_PER_BATCH = 8


@dataclass(frozen=True)
class SynthSpec:
    videos_per_class: int = 8
    frames: int = 60
    fps: float = 30.0
    width: int = 192
    height: int = 256
    seed: int = 0
    categories: tuple[str, ...] = CATEGORIES
    test_fraction: float = 0.2
    swing_probability: float = 0.25  # camera swings away, object out of frame
    bike_blur_probability: float = 0.6  # privacy-filter blur on a stretch of frames
    wrong_category_probability: float = 0.1  # raw annotation names another category
    textures: str = "category"  # category-styled, per-instance random, or plain colours
    flow_step: int = 0  # > 0: also write flow/<sid>.npz, GT flow of frames (0, s), (s, 2s)...
    specular: float = 0.0  # > 0: Blinn-Phong highlights of this peak (a fraction of white)
    roll_turn: float = 0.0  # degrees the camera turns about its optical axis over the video
    workers: int = 0


@dataclass
class VideoTruth:
    sequence_id: str
    category: str
    split: str
    defects: dict = field(default_factory=dict)


def sequence_id(category: str, index: int) -> str:
    return f"{category}/batch-{index // VIDEOS_PER_BATCH}/{index % VIDEOS_PER_BATCH}"


def _smooth_noise(rng: np.random.Generator, frames: int, scale: float) -> np.ndarray:
    """A slow random walk (hand tremor), zero-mean, about `scale` in size."""
    steps = rng.normal(0, 1, size=frames)
    width = min(9, frames)  # a kernel longer than the walk would lengthen it
    walk = np.convolve(np.cumsum(steps), np.ones(width) / width, mode="same")
    walk -= walk.mean()
    return scale * walk / (np.abs(walk).max() + 1e-9)


def _place(faces: list[Face], rotation: np.ndarray, offset: np.ndarray) -> list[Face]:
    return [
        Face(face.vertices @ rotation.T + offset, face.uv, rotation @ face.normal) for face in faces
    ]


@dataclass
class Scene:
    """Everything one synthetic video is made of, drawn from its seeded generator: the placed
    object, textures, lighting, and the camera (intrinsics, per-frame pose) along the video."""

    truth: VideoTruth
    annotated_category: str
    faces: list[Face]  # world frame
    rotation: np.ndarray  # the object's box: world = rotation @ (scale * unit) + position
    position: np.ndarray
    size: np.ndarray
    keypoints_world: np.ndarray
    texture: np.ndarray
    ground: np.ndarray
    wall: np.ndarray
    lighting: Lighting
    intrinsics: np.ndarray
    projection: np.ndarray
    eyes: np.ndarray  # (frames, 3) camera centres, world
    targets: np.ndarray  # (frames, 3) look-at points
    rolls: np.ndarray  # (frames,) radians
    blur: tuple[int, int, float] | None

    def transform(self, frame: int) -> np.ndarray:
        """Camera-to-world 4x4 of a frame (Objectron's axes)."""
        return look_at(self.eyes[frame], self.targets[frame], self.rolls[frame])

    def ground_half_size(self, frame: int) -> float:
        """Half the side of the ground square drawn in a frame: it follows the camera's
        horizontal distance, so the floor texture is rescaled about the object's foot each frame."""
        eye = self.eyes[frame]
        return 0.6 * float(np.hypot(eye[0] - self.position[0], eye[2] - self.position[2]))


def build_scene(spec: SynthSpec, category: str, index: int) -> Scene:
    """The scene of video `index` of `category`: the same seed gives the same scene."""
    rng = np.random.default_rng([spec.seed, CATEGORIES.index(category), index])
    sid = sequence_id(category, index)
    split = "test" if rng.uniform() < spec.test_fraction else "train"
    truth = VideoTruth(sid, category, split)

    # The object: a random instance, turned about the vertical, near the world origin.
    mesh = build_mesh(category, rng)
    centre_local, size = mesh_extent(mesh)
    yaw = rng.uniform(0, 2 * np.pi)
    rotation = rotation_about_y(yaw)
    position = np.array([rng.uniform(-0.1, 0.1), size[1] / 2, rng.uniform(-0.1, 0.1)])
    faces = _place(mesh, rotation, position - rotation @ centre_local)
    keypoints_world = box_points(rotation, position, size)
    texture = object_texture(spec.textures, category, rng)
    ground = floor_texture(rng)
    wall = rng.uniform(80, 200) + rng.uniform(-25, 25, size=3)  # muted, as real rooms

    # The camera: an orbit with changing azimuth, elevation and distance, plus tremor.
    n, t = spec.frames, np.linspace(0, 1, spec.frames)
    focal = spec.width * rng.uniform(0.9, 1.15)
    intrinsics = intrinsics_matrix(focal, spec.width, spec.height)
    projection = projection_matrix(intrinsics, spec.width, spec.height)
    radius = float(np.linalg.norm(size)) / 2
    distance = 2 * radius * focal / (spec.width * rng.uniform(0.5, 0.75))
    start_azimuth, orbit_sign = rng.uniform(0, 2 * np.pi), rng.choice([-1, 1])
    azimuth = start_azimuth + orbit_sign * rng.uniform(1.0, 2.4) * t
    elevation = np.radians(rng.uniform(15, 40) + 8 * np.sin(2 * np.pi * t * rng.uniform(0.5, 1.5)))
    distances = distance * (
        1 + 0.12 * np.sin(2 * np.pi * t * rng.uniform(0.5, 1.5) + rng.uniform(0, 6))
    )
    target = position + np.stack([_smooth_noise(rng, n, 0.15 * radius) for _ in range(3)], axis=1)
    # A tremor of 3 degrees, and with `roll_turn` a steady turn with the orbit (centred).
    roll = np.radians(_smooth_noise(rng, n, 3.0) + orbit_sign * spec.roll_turn * (t - 0.5))
    if rng.uniform() < spec.swing_probability:
        start, length = int(rng.integers(0, n - n // 5)), int(rng.integers(n // 10, n // 5 + 1))
        direction = rng.normal(size=3) * [1, 0.3, 1]
        direction /= np.linalg.norm(direction)
        target[start : start + length] += direction * distance * rng.uniform(0.9, 1.3)
        truth.defects["swing_frames"] = [start, start + length]
    blur = None
    if category == "bike" and rng.uniform() < spec.bike_blur_probability:
        start = int(rng.integers(0, n // 2))
        blur = (start, start + int(rng.integers(n // 3, n // 2 + 1)), float(rng.uniform(3.5, 6)))
        truth.defects["blurred_frames"] = [blur[0], blur[1]]
    lighting = Lighting(
        direction=np.array([rng.uniform(-0.6, 0.6), -1.0, rng.uniform(-0.6, 0.6)])
        / np.linalg.norm([0.6, 1, 0.6]),
        ambient=float(rng.uniform(0.35, 0.6)),
        diffuse=float(rng.uniform(0.4, 0.7)),
        specular=spec.specular,
    )
    annotated_category = category
    if rng.uniform() < spec.wrong_category_probability:
        annotated_category = str(rng.choice([c for c in CATEGORIES if c != category]))
        truth.defects["annotated_category"] = annotated_category

    eyes = np.array(
        [
            position
            + distances[frame]
            * np.array(
                [
                    np.cos(elevation[frame]) * np.cos(azimuth[frame]),
                    np.sin(elevation[frame]),
                    np.cos(elevation[frame]) * np.sin(azimuth[frame]),
                ]
            )
            for frame in range(n)
        ]
    )
    return Scene(
        truth,
        annotated_category,
        faces,
        rotation,
        position,
        size,
        keypoints_world,
        texture,
        ground,
        wall,
        lighting,
        intrinsics,
        projection,
        eyes,
        target,
        roll,
        blur,
    )


def render_frame(
    scene: Scene, spec: SynthSpec, frame: int, surfaces: SurfaceMap | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(BGR image, bool object mask) of one frame, exactly as written to the video (before
    MPEG-4 coding); fills `surfaces` when given (see `vidssl.synth.render.SurfaceMap`)."""
    view = np.linalg.inv(scene.transform(frame))
    camera = Camera(view, scene.intrinsics, spec.width, spec.height)
    lighting = scene.lighting
    flicker = replace(lighting, ambient=lighting.ambient * (1 + 0.04 * np.sin(frame / 3)))
    image, mask = render(
        camera,
        scene.faces,
        scene.texture,
        scene.ground,
        scene.position,
        scene.ground_half_size(frame),
        scene.wall,
        flicker,
        surfaces,
    )
    blur = scene.blur
    if blur and blur[0] <= frame < blur[1]:
        image = cv2.GaussianBlur(image, (0, 0), blur[2])
    return image, mask


def frame_geometry(scene: Scene, spec: SynthSpec, frame: int) -> FrameGeometry:
    """A frame's geometry for `vidssl.synth.flow` (renders the frame to learn its surfaces)."""
    surfaces = SurfaceMap.empty(spec.width, spec.height)
    render_frame(scene, spec, frame, surfaces)
    return _geometry(scene, spec, frame, surfaces)


def _geometry(scene: Scene, spec: SynthSpec, frame: int, surfaces: SurfaceMap) -> FrameGeometry:
    view = np.linalg.inv(scene.transform(frame))
    return FrameGeometry(
        Camera(view, scene.intrinsics, spec.width, spec.height),
        scene.faces,
        np.array([scene.position[0], 0.0, scene.position[2]]),
        scene.ground_half_size(frame),
        surfaces,
    )


def render_video(spec: SynthSpec, category: str, index: int, out: Path) -> VideoTruth:
    scene = build_scene(spec, category, index)
    truth, sid, n = scene.truth, scene.truth.sequence_id, spec.frames
    intrinsics, projection, position = scene.intrinsics, scene.projection, scene.position

    sequence = annotation_data_pb2.Sequence()
    obj = sequence.objects.add()
    obj.id, obj.category, obj.type = 0, scene.annotated_category, object_pb2.Object.BOUNDING_BOX
    obj.rotation.extend(scene.rotation.flatten().tolist())
    obj.translation.extend(position.tolist())
    obj.scale.extend(scene.size.tolist())
    size = scene.size
    for x, y, z in (
        (scene.keypoints_world - position) @ scene.rotation / np.where(size > 0, size, 1)
    ):
        obj.keypoints.add(x=x, y=y, z=z)

    video_dir = out / "videos" / sid
    video_dir.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(video_dir / "video.MOV"),
        cv2.VideoWriter_fourcc(*"mp4v"),
        spec.fps,
        (spec.width, spec.height),
    )
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write MPEG-4 video here")
    masks = []
    geometries: list[FrameGeometry] = []
    for frame in range(n):
        transform = scene.transform(frame)
        view = np.linalg.inv(transform)
        surfaces = SurfaceMap.empty(spec.width, spec.height) if spec.flow_step else None
        image, mask = render_frame(scene, spec, frame, surfaces)
        if surfaces is not None:
            geometries.append(_geometry(scene, spec, frame, surfaces))
        writer.write(image)
        masks.append(np.packbits(mask, axis=-1))

        annotation = sequence.frame_annotations.add()
        annotation.frame_id, annotation.timestamp = frame, frame / spec.fps
        cam = annotation.camera
        cam.tracking_state = cam.NORMAL
        cam.transform.extend(transform.flatten().tolist())
        cam.view_matrix.extend(view.flatten().tolist())
        cam.intrinsics.extend(intrinsics.flatten().tolist())
        cam.projection_matrix.extend(projection.flatten().tolist())
        # ARKit reports the landscape sensor's resolution; the frames are portrait.
        cam.image_resolution_width, cam.image_resolution_height = spec.height, spec.width
        in_camera = world_to_camera(scene.keypoints_world, view)
        normalized = project_normalized(in_camera, projection)
        object_annotation = annotation.annotations.add(object_id=0)
        inside = (
            (normalized[:, 0] >= 0)
            & (normalized[:, 0] <= 1)
            & (normalized[:, 1] >= 0)
            & (normalized[:, 1] <= 1)
        )
        object_annotation.visibility = float(inside.mean())
        for keypoint_id, (point, point_2d) in enumerate(zip(in_camera, normalized, strict=True)):
            keypoint = object_annotation.keypoints.add(id=keypoint_id)
            keypoint.point_3d.x, keypoint.point_3d.y, keypoint.point_3d.z = point.tolist()
            keypoint.point_2d.x, keypoint.point_2d.y, keypoint.point_2d.depth = point_2d.tolist()
        plane_point = np.array([[position[0], 0.0, position[2]]])
        annotation.plane_center.extend(world_to_camera(plane_point, view)[0].tolist())
        annotation.plane_normal.extend((view[:3, :3] @ np.array([0, 1.0, 0])).tolist())
    writer.release()

    annotation_path = out / "annotations" / f"{sid}.pbdata"
    annotation_path.parent.mkdir(parents=True, exist_ok=True)
    annotation_path.write_bytes(sequence.SerializeToString(deterministic=True))
    mask_path = out / "masks" / f"{sid}.npy"
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(mask_path, np.stack(masks), allow_pickle=False)
    if spec.flow_step:
        flow_path = out / flow_file_key(sid)
        flow_path.parent.mkdir(parents=True, exist_ok=True)
        write_flow_file(flow_path, geometries, category, spec.flow_step)
    return truth


def _render_star(args: tuple) -> VideoTruth:
    return render_video(*args)


def generate(out_dir: str | os.PathLike[str], spec: SynthSpec) -> list[VideoTruth]:
    """Write the whole synthetic dataset under `out_dir`; returns the ground truth per video."""
    if not 0 <= spec.flow_step < spec.frames:
        raise ValueError(
            f"flow_step must be 0 (no flow) or a frame gap below frames ({spec.frames}), "
            f"got {spec.flow_step}"
        )
    out = Path(out_dir)
    tasks = [(spec, c, i, out) for c in spec.categories for i in range(spec.videos_per_class)]
    workers = min(spec.workers or os.cpu_count() or 1, len(tasks))
    if workers <= 1:
        results = list(track(map(_render_star, tasks), len(tasks), "synth", unit="videos"))
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = list(
                track(pool.imap(_render_star, tasks), len(tasks), "synth", unit="videos")
            )
    index_dir = out / "index"
    index_dir.mkdir(parents=True, exist_ok=True)
    for category in spec.categories:
        for split in ("train", "test"):
            ids = [r.sequence_id for r in results if r.category == category and r.split == split]
            (index_dir / f"{category}_annotations_{split}").write_text(
                "".join(f"{i}\n" for i in ids)
            )
    return results


def spec_dict(spec: SynthSpec) -> dict:
    """The spec's fields that decide the output (`flow_step`, `specular` and `roll_turn` only
    when set, so specs written before they existed keep their form)."""
    optional = ("flow_step", "specular", "roll_turn")
    return {
        k: v for k, v in asdict(spec).items() if k != "workers" and not (k in optional and not v)
    }
