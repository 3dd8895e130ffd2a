"""Real footage with ground truth that a package registry ships: fetched at benchmark time.

    .venv/bin/python -m benchmarks.registry_footage      # fetch and check, print what is there

The only night footage with ground truth (and the only real far-off people) found in any
registry (PyPI, Debian, npm) are the test assets inside the sdist of ``boxmot==21.0.0``: 8
frames of MOT17-04 (a lamp-lit pedestrian street at night, 1920x1080, 42 people a frame),
4 frames of MOT17-02 (the same kind of camera by day, 1920x1080) and two 6-frame MMOT drone
clips (1200x900, people 13-28 px seen from above, false-colour multispectral). Nothing here
is committed to the repository.

``fetch()`` downloads the sdist with pip (the registry's ordinary client) into
``out/bench-data`` (git-ignored), checks its sha256 and the sha256 of every data file it
extracts, and extracts nothing else. MOT17 ground-truth rules (as MOTChallenge scores them):
classes 1 (pedestrian) and 7 (static person) with conf 1 are counted; classes 2 (person on a
vehicle), 8 (distractor), 12 (reflection) and conf-0 rows are "ignore" regions (a detection
there is neither right nor wrong); vehicles and occluders are dropped. Benchmarks also score
a "reasonable" subset (people at least half visible, by MOT17's visibility column; the rest
ignore regions), as pedestrian benchmarks such as Caltech and CityPersons do. MMOT: class 2
(pedestrian) oriented boxes as the axis-aligned box around their corners.

Licences: MOT17 is CC BY-NC-SA 3.0 (MOTChallenge: Milan et al., "MOT16: A Benchmark for
Multi-Object Tracking", arXiv:1603.00831); MMOT's terms are not stated in the package
(research use only). The boxmot package itself is AGPL-3.0.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "out" / "bench-data"
SDIST = "boxmot-21.0.0.tar.gz"
SDIST_SHA256 = "b044d73a33474ba49f9f1a49b55c7ed457d5a25e8f597cfadcbd63d2d4d06dd3"
PREFIX = "boxmot-21.0.0/assets/"
Boxes = npt.NDArray[np.float64]
FILES = {  # path under assets/: sha256 (checked after every extraction)
    "MOT17-mini/train/MOT17-02-FRCNN/gt/gt.txt":
        "7a0fa89361fa792a3d4654aec0a50de75c41b114d21897b9a6ccda14f22da4e3",
    "MOT17-mini/train/MOT17-04-FRCNN/gt/gt.txt":
        "5bed3a5b28ff3df1cd81e73497622ebc5dafa031c6095c86809a2da910b0daba",
    "mmot-mini/train/mot/data23-1.txt":
        "13f1bcdc048d0e9a0a662a7f4c1f820f5e65716a5bfb65dc2558c742a8535807",
    "mmot-mini/train/mot/data24-1.txt":
        "50a2ecd7edf0b787202c2ba410370e677afd9d9d0705bcdb9046fc8790dbc00f",
    **{f"MOT17-mini/train/MOT17-02-FRCNN/img1/00000{i}.jpg": h for i, h in enumerate([
        "41ff65408c5338f4a83035fd12e9f5f7b658ee82feacf4512655677032636597",
        "9312a3137c9a12524d381d85c693ed39b67374fc1872eb6b1e5a91d66e73e6ea",
        "a5c373bede979b5389009136380f39c38cad930dcbc453dd00438154f084b012",
        "078c220b50b3a9b94c1a4b9d916b95bdf92aa47f6b249d0988bc091ceb690c80"], 1)},
    **{f"MOT17-mini/train/MOT17-04-FRCNN/img1/00000{i}.jpg": h for i, h in enumerate([
        "53f3d86aad1aa4912b2919bae344919b54d193e72c1c7169ce8bc4685408053c",
        "1c6c088869ef03477a73f4d4cb90de430a456bff028734f6afe69af128a71a8b",
        "edc451e430b1f77d2ab5d1b10d5c7fc5f5ab3bee1391391da49b8602fe84d481",
        "1f32f99af0396a999f5ee6e28b2c6b7236647fd945ea82df63a3e672d45774b4",
        "a98f21491ff16bb92d3da2bb8ac26a02c1516c9843e1171ca7f30239f43af91a",
        "2b177ccd455003a70cdad36709c7bcb8dd0cfbb7fa15df937cca7ffbaea3b03f",
        "b5d8ce71a6910d8303c24263e6b18f575aafcc38555f70e57b68e3956f6a9cfd",
        "7965767d179adbbea6ec3695089f8822c1f86e649ef3c5c1c0347558099d132d"], 1)},
    **{f"mmot-mini/train/npy/data23-1/00000{i}.npy": h for i, h in enumerate([
        "6c84d176d69bc9662ee98ac35d2b2afd675a684ce966f4b3c9f5487d9e602ac0",
        "bc6e186b1464742150e3a40d69cd5391ca5ede0bad9f1703fef0be80b88b556b",
        "18f44dfe40033d6575f143b16ee04e5be22d1718cd1dd065ad723527e71c06d1",
        "c1d08cb080e75fdcd617ccaa1d640f2820c0e9688d6dca848072e442cd68593c",
        "ea9f4d02f3a48eeff950cef02efbc094c79ee43bb04570e8ae74c2e25d354e76",
        "6ee83ae2f9dff799e5032a5392d10f47298bcab504b42a3a0caf2fffd4f52661"], 1)},
    **{f"mmot-mini/train/npy/data24-1/00000{i}.npy": h for i, h in enumerate([
        "d42f4df079877aa4752d0a215498010eebd477cb91dd922a2c3a0e7e85ea2f86",
        "d9d0c2405229d360eff8c9af43a89e277affded1627f93c4d051567a13e500c4",
        "3839490b77f64724036fd28ed3a9e109f950e9da23b080e9276d00e0b2bcc4eb",
        "10f3cab06ca9962fed65e37653c063582d9f404ce82ff2c47055e7b5e6b89cb3",
        "a5863b1a2850b7e320d60c4f2e4975711021554193d8d034d3521d10d0e01fc7",
        "367353f2646ae1c17e6e1095a534a11123ef1f8ee4e08efe642b031f563ffbd0"], 1)},
}


class FootageError(RuntimeError):
    """The registry file or a data file in it is missing or not the pinned one."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _extracted_ok(raw: Path) -> bool:
    return all((raw / k).is_file() and _sha256(raw / k) == v for k, v in FILES.items())


def fetch(cache: Path = CACHE) -> Path:
    """The checked ``assets`` folder of the sdist; downloads and extracts only when needed."""
    raw = cache / "boxmot-21.0.0" / "assets"
    if _extracted_ok(raw):
        return raw
    sdist = cache / SDIST
    if not sdist.is_file() or _sha256(sdist) != SDIST_SHA256:
        cache.mkdir(parents=True, exist_ok=True)
        print(f"downloading {SDIST} from PyPI with pip", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "boxmot==21.0.0", "--no-deps",
                        "--no-binary", ":all:", "-d", str(cache)], check=True,
                       stdout=subprocess.DEVNULL)
        if _sha256(sdist) != SDIST_SHA256:
            raise FootageError(f"{sdist}: sha256 is not the pinned {SDIST_SHA256[:16]}...")
    with tarfile.open(sdist) as tar:
        for name in FILES:  # only the pinned data files, by exact name: nothing else lands
            member = tar.getmember(PREFIX + name)
            src = tar.extractfile(member)
            if src is None:
                raise FootageError(f"{sdist}: {name} is not a file")
            (raw / name).parent.mkdir(parents=True, exist_ok=True)
            (raw / name).write_bytes(src.read())
    if not _extracted_ok(raw):
        raise FootageError(f"{raw}: a data file does not match its pinned sha256")
    return raw


@dataclass(frozen=True)
class Frame:
    """One frame and its ground truth: counted boxes and ignore regions (x1, y1, x2, y2)."""

    image: npt.NDArray[np.uint8]
    people: Boxes
    ignore: Boxes


def mot17(raw: Path, seq: str, min_visibility: float = 0.0) -> list[Frame]:
    """``MOT17-02`` or ``MOT17-04`` frames with MOTChallenge's counting rules; people less
    visible than ``min_visibility`` (MOT17 boxes occluded people at full size, down to a few
    per cent visible) become ignore regions too."""
    folder = raw / f"MOT17-mini/train/{seq}-FRCNN"
    rows = np.loadtxt(folder / "gt/gt.txt", delimiter=",", ndmin=2)
    out = []
    for i in range(1, 99):
        path = folder / f"img1/{i:06d}.jpg"
        if not path.is_file():
            break
        r = rows[rows[:, 0] == i]
        xyxy = np.column_stack((r[:, 2:4], r[:, 2:4] + r[:, 4:6]))
        person = np.isin(r[:, 7], (1, 7))
        counted = person & (r[:, 6] == 1) & (r[:, 8] >= min_visibility)
        ignore = np.isin(r[:, 7], (2, 8, 12)) | (person & ~counted)
        image = np.asarray(cv2.imread(str(path)), dtype=np.uint8)
        out.append(Frame(image, xyxy[counted], xyxy[ignore]))
    return out


def mmot(raw: Path, seq: str) -> list[Frame]:
    """An MMOT drone clip (``data23-1``, ``data24-1``): pedestrians (class 2) only."""
    rows = np.loadtxt(raw / f"mmot-mini/train/mot/{seq}.txt", delimiter=",", ndmin=2)
    out = []
    for i in range(1, 99):
        path = raw / f"mmot-mini/train/npy/{seq}/{i:06d}.npy"
        if not path.is_file():
            break
        rgb = np.load(path)
        h, w = rgb.shape[:2]
        r = rows[(rows[:, 0] == i) & (rows[:, 11] == 2)]
        xs, ys = r[:, 2:10:2], r[:, 3:10:2]
        xyxy = np.column_stack((xs.min(1).clip(0, w), ys.min(1).clip(0, h),
                                xs.max(1).clip(0, w), ys.max(1).clip(0, h)))
        image = np.ascontiguousarray(rgb[:, :, ::-1], dtype=np.uint8)  # stored as RGB
        out.append(Frame(image, xyxy, np.zeros((0, 4))))
    return out


if __name__ == "__main__":
    assets = fetch()
    for name, frames in (("MOT17-02 (day)", mot17(assets, "MOT17-02")),
                         ("MOT17-04 (night)", mot17(assets, "MOT17-04")),
                         ("MMOT data23-1", mmot(assets, "data23-1")),
                         ("MMOT data24-1", mmot(assets, "data24-1"))):
        hs = np.concatenate([f.people[:, 3] - f.people[:, 1] for f in frames])
        print(f"{name}: {len(frames)} frames {frames[0].image.shape[1]}x"
              f"{frames[0].image.shape[0]}, {len(hs)} people, height px min/median/max "
              f"{hs.min():.0f}/{np.median(hs):.0f}/{hs.max():.0f}")
