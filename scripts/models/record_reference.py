#!/usr/bin/env python3
"""Record MediaPipe Python's pose landmarks on the sample photos, as the
reference the Rust estimator is tested against
(crates/pose/tests/data/mediapipe_reference.json), and time it.

MediaPipe is used exactly as the earlier posture analyzer did:
mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1), images
read with OpenCV and converted BGR -> RGB.

Setup (dev machine only, not needed by CI):
  python3 -m venv .venv/reference
  .venv/reference/bin/pip install mediapipe==0.10.21 opencv-python-headless==4.10.0.84 numpy==1.26.4
  scripts/setup-models.sh
Regenerate:
  .venv/reference/bin/python scripts/models/record_reference.py models/samples \
      > crates/pose/tests/data/mediapipe_reference.json
Time on one core (for comparison with `posture-farm bench pose`):
  taskset -c 0 .venv/reference/bin/python scripts/models/record_reference.py models/samples --bench 30
and MediaPipe's own tracking (static_image_mode=False, each photo a still
camera: `posture-farm bench pose --mode tracking` does the same):
  taskset -c 0 .venv/reference/bin/python scripts/models/record_reference.py models/samples --bench 30 --video
"""

import argparse
import json
import os
import sys
import time

import cv2
import mediapipe as mp

ap = argparse.ArgumentParser()
ap.add_argument("samples")
ap.add_argument("--bench", type=int, default=0, help="time N passes over the photos instead of printing JSON")
ap.add_argument("--video", action="store_true",
                help="with --bench: static_image_mode=False, each photo N frames of its own stream")
a = ap.parse_args()

names = sorted(n for n in os.listdir(a.samples) if n.endswith((".png", ".jpg")))
images = {}
for n in names:
    bgr = cv2.imread(os.path.join(a.samples, n), cv2.IMREAD_COLOR)
    images[n] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
if not a.bench:
    # Lossless rotations of the PNG photos exercise the rotated-ROI path
    # (a person lying sideways). "name@rot90" = rotated 90 degrees clockwise.
    for n in [n for n in names if n.endswith(".png")]:
        images[n + "@rot90"] = cv2.rotate(images[n], cv2.ROTATE_90_CLOCKWISE)
        images[n + "@rot270"] = cv2.rotate(images[n], cv2.ROTATE_90_COUNTERCLOCKWISE)
    names = sorted(images)

def report(mode, lat):
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"mediapipe {mp.__version__} ({mode}): {len(lat)} runs, p50 {p(0.5):.2f} ms, p95 {p(0.95):.2f} ms, "
          f"mean {sum(lat) / len(lat):.2f} ms, {1000 * len(lat) / sum(lat):.1f} images/s")


if a.bench and a.video:
    lat = []
    for n in names:
        # A fresh graph per photo: its first frame runs the detector (warm-up,
        # untimed), the timed frames are tracked.
        with mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1) as pose:
            pose.process(images[n])
            for _ in range(a.bench):
                t = time.perf_counter()
                pose.process(images[n])
                lat.append((time.perf_counter() - t) * 1000)
    report("video, tracking", lat)
    sys.exit(0)

with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as pose:
    if a.bench:
        lat = []
        for n in names:
            pose.process(images[n])  # warm-up
        for _ in range(a.bench):
            for n in names:
                t = time.perf_counter()
                pose.process(images[n])
                lat.append((time.perf_counter() - t) * 1000)
        report("static images", lat)
        sys.exit(0)
    out = {"generator": "scripts/models/record_reference.py", "mediapipe": mp.__version__,
           "options": {"static_image_mode": True, "model_complexity": 1}, "images": {}}
    for n in names:
        img = images[n]
        h, w = img.shape[:2]
        r = pose.process(img)
        entry = {"width": w, "height": h, "landmarks": None}
        if r.pose_landmarks:
            entry["landmarks"] = [
                {"x": round(l.x * w, 3), "y": round(l.y * h, 3), "z": round(l.z * w, 3),
                 "visibility": round(l.visibility, 4), "presence": round(l.presence, 4)}
                for l in r.pose_landmarks.landmark]
        out["images"][n] = entry
    json.dump(out, sys.stdout, indent=1)
    print()
