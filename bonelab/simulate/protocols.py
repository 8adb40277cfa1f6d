"""View protocols: how each anatomy is radiographed, and how its films are hung.

A :class:`Protocol` is the one place that says, for one anatomy, which views exist and about
which axis they turn, which structures set the isocentre and which are projected as targets,
the field of view, distances and detector, the positioning jitter, the physics ranges, and how
the rendered image is hung for reading.  :data:`PROTOCOLS` holds the book's protocols; a reader
adds one with :func:`register_protocol`.

Views are C-arm positions (:func:`bonelab.drr.carm`): ``angle_deg`` about the volume's z axis
(the patient's or the limb's long axis) from PA (0: source posterior, beam travelling anterior;
90: left lateral, detector on the patient's left; 180: AP), ``tilt_deg`` cranio-caudal.  A view
of ``kind="localizer"`` is a CT localizer instead (:func:`bonelab.drr.localizer`, a slot scan):
the tube at ``angle_deg`` about the table axis (180: AP scout, tube above the supine patient; 90:
lateral), at a CT gantry's distances (:data:`bonelab.drr.geometry.LOCALIZER_SID_MM`,
:data:`bonelab.drr.geometry.LOCALIZER_SDD_MM`; not the protocol's ``sdd_mm``/``odd_mm``), never
tilted or rolled (the patient lies on the table, aligned with it), with square pixels at the
isocentre (table increment = fan pitch there).

How films are hung (one rule for every protocol and view)
---------------------------------------------------------
A film is hung with the protocol's ``up`` direction at the top and seen from the reader's eye,
which is at one of three places (the view's ``viewer``):

==========  ================================================  ==================================
viewer      the reader's eye                                  used for
==========  ================================================  ==================================
source      at the X-ray tube, looking along the beam         extremities (ACR/textbook rule:
                                                              the viewer's eyes take the place
                                                              of the beam): a PA right wrist is
                                                              hung fingers up, thumb (radius) on
                                                              the viewer's left
anterior    in front of the patient (patient and viewer       PA and AP films of the torso,
            face each other)                                  spine and hip: the patient's right
                                                              on the viewer's left
detector    at the detector, looking back at the tube         laterals of the torso and spine: a
                                                              left lateral shows anterior on the
                                                              image left, the spine on the right
==========  ================================================  ==================================

:func:`display_flips` turns that rule into row/column flips of the detector (computed from the
geometry, never hard-coded per anatomy; :func:`make_geometry` applies them to the detector axes,
so the renderer draws the hung film directly), and every protocol has a test that
renders a phantom and checks on which side a named structure falls.

>>> p = protocol("wrist")
>>> sorted(p.views), p.views["pa"].viewer
(['lateral', 'oblique', 'pa'], 'source')
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import numpy as np

from bonelab.drr.geometry import LOCALIZER_SDD_MM, LOCALIZER_SID_MM, PATIENT_DIRECTIONS
from bonelab.errors import InvalidArgumentError
from bonelab.simulate.physics import _uniform

VIEWERS = ("source", "anterior", "detector")
KINDS = ("radiograph", "localizer")
"""What a view is: a radiograph (a cone beam, :func:`bonelab.drr.carm`) or a CT localizer (a slot
scan, :func:`bonelab.drr.localizer`)."""


@dataclass(frozen=True)
class View:
    """One view of a protocol: C-arm ``angle_deg`` (about the volume's z axis, from PA; LAO
    positive) and ``tilt_deg`` (cranial positive), where the reader's eye is (``viewer``), and
    its ``kind``: ``"radiograph"`` or ``"localizer"`` (a CT localizer, see the module docstring;
    its ``tilt_deg`` must be 0)."""

    angle_deg: float
    tilt_deg: float = 0.0
    viewer: str = "source"
    description: str = ""
    kind: str = "radiograph"

    def __post_init__(self):
        if self.viewer not in VIEWERS:
            raise InvalidArgumentError(f"viewer {self.viewer!r} is unknown; use one of {VIEWERS}.")
        if self.kind not in KINDS:
            raise InvalidArgumentError(f"view kind {self.kind!r} is unknown; use one of {KINDS}.")
        if self.kind == "localizer" and self.tilt_deg:
            raise InvalidArgumentError(f"a localizer view cannot be tilted (the table runs along the patient); "
                                       f"got tilt_deg={self.tilt_deg}: use 0.")


def _physics(kvp, shifted_kvp, spr, shifted_spr, photons=(1e3, 3e4), fixed_photons=1e4,
             shifted_photons=(2e2, 5e2), filtration=(2.0, 4.0), shifted_filtration=(5.0, 7.0)) -> dict:
    """The three named physics settings of a protocol: ``random`` (domain randomisation ranges),
    ``fixed`` (one typical setting, the middle of each range) and ``shifted`` (outside the
    training ranges: harder beam, more noise, scatter and blur; for robustness tests)."""
    random = {
        "kvp": kvp, "filtration_mm_al": filtration, "photons": photons, "electronic_sigma": (0.0, 5.0),
        "scatter_to_primary": spr, "scatter_sigma_mm": (10.0, 40.0), "blur_px": (0.3, 1.2),
        "gamma": (0.7, 1.4), "window_low_pct": (0.0, 3.0), "window_high_pct": (97.0, 100.0),
        "postprocess": (0.5, 0.5),
    }
    mid = {k: (v, v) for k, v in {
        "kvp": float(2 * round((kvp[0] + kvp[1]) / 4)), "filtration_mm_al": 2.5,
        "photons": float(fixed_photons), "electronic_sigma": 2.0,
        "scatter_to_primary": round(float(np.mean(spr)), 2), "scatter_sigma_mm": 25.0, "blur_px": 0.6,
        "gamma": 1.0, "window_low_pct": 0.5, "window_high_pct": 99.5, "postprocess": 0.0}.items()}
    shifted = {**random, "kvp": shifted_kvp, "filtration_mm_al": shifted_filtration, "photons": shifted_photons,
               "electronic_sigma": (8.0, 12.0), "scatter_to_primary": shifted_spr,
               "scatter_sigma_mm": (20.0, 40.0), "blur_px": (1.6, 2.2), "gamma": (1.7, 2.2), "postprocess": (0.0, 0.0)}
    return {"random": random, "fixed": mid, "shifted": shifted}


@dataclass(frozen=True)
class Protocol:
    """How one anatomy is radiographed (see the module docstring).

    Attributes
    ----------
    name : the protocol's name (``bonelab simulate NAME``)
    phantom : the :data:`bonelab.phantoms.GENERATORS` key of its virtual subjects (None: only a
        reader's own CTs)
    views : ``{view name: View}``
    up : direction (x, y, z) in the CT frame (LPS) hung at the top of the film
    structures : regular expression of the label names projected as targets (full match)
    center : regular expression of the label names whose centroid is the isocentre
    classes : ``((class name, regex), ...)``: how structures map to classes for the class-map
        and instance targets; empty: each structure is its own class
    on_top : class names that win where classes overlap in a class map (e.g. implants)
    fov_mm : (low, high) field of view at the isocentre, drawn uniformly per sample
    size : detector pixels (square), the default of ``simulate(size=None)``
    spacing_mm : voxel size of generated phantoms
    sdd_mm, odd_mm : (low, high) source-to-detector and isocentre-to-detector distances (mm)
    jitter : positioning ranges: ``angle_deg``, ``tilt_deg``, ``roll_deg`` (+- each),
        ``shift_fraction`` (+- fraction of the field of view that the isocentre may move off the
        detector centre along each detector axis)
    physics : ``{"random"|"fixed"|"shifted": {parameter: (low, high)}}``
    grid : whether the acquisition uses an anti-scatter grid (:class:`bonelab.drr.physics.AntiScatterGrid`;
        the physics ranges' scatter is the scatter in front of it)
    subject_options : ``{keyword: ("choice", values) | (low, high)}`` drawn per generated subject
        and passed to the phantom generator (e.g. the side and posture of a wrist)
    extend_z_mm : generated subjects are continued this far beyond both z ends of their box
        (:func:`bonelab.phantoms.subject.extend_z`), so wide fields show the limb running on
    directions : names of the CT frame's six directions, keyed ``(axis, sign)`` as
        :func:`bonelab.drr.geometry.direction_letter` takes them, for the orientation markers of a
        film (:func:`film_directions`, :meth:`direction_names`); mirrored subjects swap the x pair
    mirrored_side : a subject whose ``params["side"]`` is this value is radiographed with every
        view angle negated (a left wrist's lateral puts its ulnar side on the detector as a right
        wrist's does); None for anatomy without sides
    reference : where the clinical settings come from
    """

    name: str
    phantom: str | None
    views: dict
    up: tuple
    structures: str
    center: str
    classes: tuple = ()
    on_top: tuple = ()
    fov_mm: tuple = (75.0, 75.0)
    size: int = 96
    spacing_mm: float = 1.0
    sdd_mm: tuple = (1000.0, 1150.0)
    odd_mm: tuple = (30.0, 80.0)
    jitter: dict = field(default_factory=dict)
    physics: dict = field(default_factory=dict)
    grid: bool = False
    subject_options: dict = field(default_factory=dict)
    mirrored_side: str | None = None
    extend_z_mm: float = 0.0
    directions: dict = field(default_factory=lambda: dict(TORSO_DIRECTIONS))
    reference: str = ""

    def direction_names(self, mirrored: bool = False) -> dict:
        """:attr:`directions`, with the x pair swapped for a mirrored (e.g. left) subject."""
        names = dict(self.directions)
        if mirrored:
            names[(0, 1)], names[(0, -1)] = names[(0, -1)], names[(0, 1)]
        return names

    def is_mirrored(self, subject) -> bool:
        """Whether ``subject`` (a :class:`bonelab.phantoms.Subject`) is radiographed with mirrored
        views: its ``params["side"]`` is :attr:`mirrored_side`."""
        return self.mirrored_side is not None and subject.params.get("side") == self.mirrored_side

    def view_angle(self, view: str, mirrored: bool = False) -> float:
        """The C-arm angle of ``view`` (degrees), negated for a mirrored (e.g. left) subject."""
        angle = self.views[view].angle_deg
        return -angle if mirrored else angle

    def physics_ranges(self, physics="random") -> dict:
        """Named physics ranges of this protocol, or a dict of ranges checked for completeness."""
        if isinstance(physics, str):
            if physics not in self.physics:
                raise InvalidArgumentError(f"physics {physics!r} is unknown; use one of {sorted(self.physics)} "
                                           "or a dict of ranges.")
            return self.physics[physics]
        missing = set(self.physics["random"]) - set(physics)
        if missing:
            raise InvalidArgumentError(f"physics ranges lack {sorted(missing)}; start from "
                                       f"dict(protocol({self.name!r}).physics['random']).")
        return dict(physics)

    def select(self, label_names: dict, pattern: str | None = None) -> dict:
        """``{value: name}`` of the labels whose names fully match ``pattern`` (default: the
        target ``structures``), in label order."""
        rx = re.compile(self.structures if pattern is None else pattern)
        return {int(v): n for v, n in sorted(label_names.items()) if int(v) != 0 and rx.fullmatch(str(n))}

    def class_names(self, structure_names) -> list:
        """Class names of the class-map / instance targets (index 1, 2, ...; 0 is background)."""
        if not self.classes:
            return list(structure_names)
        return [c for c, _ in self.classes]

    def class_ids(self, structure_names) -> list:
        """Class id (1-based) of each structure, in structure order; raises when a structure
        matches no class."""
        if not self.classes:
            return list(range(1, len(structure_names) + 1))
        ids = []
        for name in structure_names:
            hit = [i for i, (_, rx) in enumerate(self.classes, start=1) if re.fullmatch(rx, str(name))]
            if not hit:
                raise InvalidArgumentError(f"structure {name!r} matches no class of protocol {self.name!r} "
                                           f"({[c for c, _ in self.classes]}); add it to the protocol's classes.")
            ids.append(hit[0])
        return ids

    def tables(self):
        """The protocol as two pandas tables (physics ranges per setting; geometry and jitter),
        for a chapter to show."""
        import pandas as pd

        def fmt(lo, hi):
            return f"{lo:g}" if lo == hi else f"{lo:g} - {hi:g}"

        physics = pd.DataFrame({k: {p: fmt(*r) for p, r in v.items()} for k, v in self.physics.items()})
        physics.index.name = "parameter"
        geo = {"views": ", ".join(f"{n} ({'CT localizer, ' if v.kind == 'localizer' else ''}{v.angle_deg:g} deg, "
                                  f"seen from the {v.viewer})" for n, v in self.views.items()),
               "field of view (mm)": fmt(*self.fov_mm), "source-detector (mm)": fmt(*self.sdd_mm),
               "isocentre-detector (mm)": fmt(*self.odd_mm), "grid": "yes" if self.grid else "no",
               **({"CT localizer source-isocentre / source-detector (mm)": f"{LOCALIZER_SID_MM:g} / {LOCALIZER_SDD_MM:g}"}
                  if any(v.kind == "localizer" for v in self.views.values()) else {}),
               **{f"jitter {k}": f"+-{v:g}" for k, v in self.jitter.items()},
               **{f"subject {k}": (", ".join(map(str, v[1])) if v[0] == "choice" else fmt(*v))
                  for k, v in self.subject_options.items()}}
        geometry = pd.DataFrame({"setting": geo})
        return physics, geometry


TORSO_DIRECTIONS = dict(PATIENT_DIRECTIONS)
"""Film markers of the patient frame (LPS), keyed (axis, sign): left/right, posterior/anterior, head/feet."""
RIGHT_WRIST_DIRECTIONS = {(0, 1): "ulnar", (0, -1): "radial", (1, 1): "dorsal", (1, -1): "palmar",
                          (2, 1): "proximal", (2, -1): "distal"}
"""Film markers of the (right) wrist phantom's frame: x ulnar, y dorsal, z proximal."""

PROTOCOLS: dict = {}
"""The registered protocols by name."""


def register_protocol(p: Protocol) -> Protocol:
    """Add (or replace) a protocol in :data:`PROTOCOLS`; returns it."""
    PROTOCOLS[p.name] = p
    return p


def protocol(name) -> Protocol:
    """The protocol called ``name`` (a :class:`Protocol` passes through)."""
    if isinstance(name, Protocol):
        return name
    if name not in PROTOCOLS:
        raise InvalidArgumentError(f"protocol {name!r} is unknown; use one of {sorted(PROTOCOLS)} "
                                   "(or register_protocol your own).")
    return PROTOCOLS[name]


# --------------------------------------------------------------------------------------------
# The book's protocols
# --------------------------------------------------------------------------------------------
_CARPALS = "scaphoid|lunate|triquetrum|pisiform|trapezium|trapezoid|capitate|hamate"
# TotalSegmentator-style bone names (a reader's own labelled CTs) next to the phantoms' names.
_TS_BONES = r"(vertebrae_.*|rib_.*|sternum|clavicula_.*|scapula_.*|humerus_.*|femur_.*|hip_.*|sacrum|costal_cartilages)"

register_protocol(Protocol(
    name="wrist", phantom="wrist",
    views={"pa": View(0.0, description="posteroanterior: palm on the detector, beam dorsal -> palmar"),
           "oblique": View(45.0, description="semi-pronated oblique: radial side raised 45 degrees"),
           "lateral": View(90.0, description="lateral: ulnar side on the detector, beam radial -> ulnar")},
    up=(0.0, 0.0, -1.0),  # distal (fingers) up; the wrist phantom's z axis points proximal
    structures=f"{_CARPALS}|radius|ulna", center=_CARPALS,
    fov_mm=(60.0, 120.0), size=96, spacing_mm=0.75, sdd_mm=(1000.0, 1150.0), odd_mm=(30.0, 80.0),
    jitter={"angle_deg": 8.0, "tilt_deg": 8.0, "roll_deg": 25.0, "shift_fraction": 1 / 3},
    physics=_physics(kvp=(50, 70), shifted_kvp=(86, 100), spr=(0.05, 0.4), shifted_spr=(0.6, 0.9)),
    grid=False, mirrored_side="left", directions=RIGHT_WRIST_DIRECTIONS, extend_z_mm=50.0,
    subject_options={"side": ("choice", ("right", "left")), "deviation_deg": (-20.0, 25.0),
                     "flexion_deg": (-25.0, 25.0)},
    reference="Bontrager's Textbook of Radiographic Positioning: wrist PA/oblique/lateral at 100 cm SID, "
              "no grid, 55-65 kVp"))

register_protocol(Protocol(
    name="chest", phantom="chest",
    views={"pa": View(0.0, viewer="anterior", description="PA chest: anterior chest on the detector"),
           "lateral": View(90.0, viewer="detector", description="left lateral: left side on the detector")},
    up=(0.0, 0.0, 1.0), structures=f"rib|vertebra|sternum|clavicle|scapula|humerus|{_TS_BONES}",
    center=".*", fov_mm=(380.0, 430.0), size=256, spacing_mm=2.5,
    sdd_mm=(1750.0, 1850.0), odd_mm=(130.0, 200.0),
    jitter={"angle_deg": 4.0, "tilt_deg": 4.0, "roll_deg": 4.0, "shift_fraction": 0.05},
    physics=_physics(kvp=(110, 125), shifted_kvp=(70, 80), spr=(1.0, 4.0), shifted_spr=(8.0, 10.0),
                     photons=(5e4, 5e5), fixed_photons=2e5, shifted_photons=(3e3, 6e3)),
    grid=True, reference="PA chest at 180 cm SID, 110-125 kVp with a grid (European guidelines on "
                         "quality criteria for diagnostic radiographic images, EUR 16260, 1996)"))

register_protocol(Protocol(
    name="lumbar", phantom="lumbar_spine",
    views={"lateral": View(90.0, viewer="detector", description="left lateral lumbar spine"),
           "ap": View(180.0, viewer="anterior", description="AP lumbar spine, patient supine")},
    up=(0.0, 0.0, 1.0), structures=r"L[1-5]|sacrum|implant|vertebrae_L[1-5]|vertebrae_S1",
    center=r"L[1-5]|vertebrae_L[1-5]",
    classes=(("vertebra", r"L[1-5]|vertebrae_L[1-5]"), ("sacrum", r"sacrum|vertebrae_S1"), ("implant", "implant")),
    on_top=("implant",), fov_mm=(240.0, 300.0), size=256, spacing_mm=1.5,
    sdd_mm=(1000.0, 1150.0), odd_mm=(150.0, 250.0),
    jitter={"angle_deg": 5.0, "tilt_deg": 5.0, "roll_deg": 5.0, "shift_fraction": 0.08},
    physics=_physics(kvp=(80, 95), shifted_kvp=(60, 66), spr=(2.0, 6.0), shifted_spr=(12.0, 15.0),
                     photons=(3e4, 3e5), fixed_photons=1e5, shifted_photons=(2e3, 5e3)),
    grid=True, subject_options={"implants": ("choice", ("random",)), "degeneration": ("choice", (None, "random"))},
    reference="lumbar spine AP 75-85 kVp, lateral 85-95 kVp, 100-115 cm SID with a grid (EUR 16260, 1996; "
              "Bontrager)"))

register_protocol(Protocol(
    name="hip", phantom="hip",
    views={"ap": View(180.0, viewer="anterior", description="AP pelvis / both hips, patient supine")},
    up=(0.0, 0.0, 1.0), structures=r"femur_left|femur_right|pelvis|sacrum|hip_left|hip_right",
    center=r"femur_left|femur_right|pelvis|hip_left|hip_right",
    fov_mm=(300.0, 360.0), size=256, spacing_mm=1.5, sdd_mm=(1000.0, 1150.0), odd_mm=(130.0, 220.0),
    jitter={"angle_deg": 4.0, "tilt_deg": 4.0, "roll_deg": 4.0, "shift_fraction": 0.05},
    physics=_physics(kvp=(70, 85), shifted_kvp=(100, 110), spr=(1.5, 5.0), shifted_spr=(10.0, 12.0),
                     photons=(3e4, 3e5), fixed_photons=1e5, shifted_photons=(2e3, 5e3)),
    grid=True, reference="AP pelvis 75-80 kVp, 115 cm SID with a grid (EUR 16260, 1996; Bontrager)"))

register_protocol(Protocol(
    name="localizer", phantom="chest",
    views={"localizer-ap": View(180.0, viewer="anterior", kind="localizer",
                                description="AP CT localizer (scout): tube above the supine patient, slot scan"),
           "localizer-lateral": View(90.0, viewer="detector", kind="localizer",
                                     description="lateral CT localizer: tube at the patient's right"),
           "pa": View(0.0, viewer="anterior", description="PA chest: anterior chest on the detector"),
           "lateral": View(90.0, viewer="detector", description="left lateral chest: left side on the detector")},
    up=(0.0, 0.0, 1.0), structures=f"rib|vertebra|sternum|clavicle|scapula|humerus|{_TS_BONES}",
    center=".*", fov_mm=(380.0, 450.0), size=256, spacing_mm=2.5,
    sdd_mm=(1750.0, 1850.0), odd_mm=(130.0, 200.0),  # the chest films'; the localizers use a CT gantry's
    jitter={"angle_deg": 4.0, "tilt_deg": 4.0, "roll_deg": 4.0, "shift_fraction": 0.05},
    # One set of ranges for all four views (physics ranges are per protocol, not per view): kVp
    # spans the localizer's 120 kVp and chest films' 110-125; filtration 2-9 mm Al spans a chest
    # tube's 2.5-3 mm and a CT tube's heavier filter (several mm Al plus copper or a bow-tie,
    # 6-9 mm Al equivalent at the fan centre); photons reach down to a localizer's low dose.
    physics=_physics(kvp=(100, 130), shifted_kvp=(70, 80), spr=(1.0, 4.0), shifted_spr=(8.0, 10.0),
                     photons=(1e4, 5e5), fixed_photons=1e5, shifted_photons=(1e3, 3e3),
                     filtration=(2.0, 9.0), shifted_filtration=(11.0, 13.0)),
    grid=True, reference="CT localizer (scout/topogram) at 120 kVp on a CT gantry (570 mm focal spot to "
                         "isocentre, 1040 mm to the detector), low dose; PA and lateral chest at 180 cm SID, "
                         "110-125 kVp with a grid (EUR 16260, 1996).  The physics ranges are one per protocol, "
                         "not per view: 100-130 kVp, 2-9 mm Al and 1e4-5e5 photons per pixel cover both the "
                         "localizers (low dose, heavy CT filtration) and the chest films; the scatter ranges "
                         "are the chest film's, more than a narrow slot lets through."))


# --------------------------------------------------------------------------------------------
# Drawing the geometry of one sample
# --------------------------------------------------------------------------------------------
def draw_geometry(p: Protocol, view: str, rng: np.random.Generator, mirrored: bool = False) -> dict:
    """Pose and acquisition geometry of one sample of ``view`` (degrees and mm): the view's
    angles plus positioning jitter, in-plane roll, field of view, distances and the isocentre's
    offset from the detector centre.

    >>> g = draw_geometry(protocol("wrist"), "lateral", np.random.default_rng(0))
    >>> 82 <= g["angle_deg"] <= 98 and 60 <= g["fov_mm"] <= 120
    True
    """
    if view not in p.views:
        raise InvalidArgumentError(f"view {view!r} is not in protocol {p.name!r}; use one of {list(p.views)}.")
    v, j = p.views[view], p.jitter
    fov = _uniform(rng, *p.fov_mm)
    shift = j.get("shift_fraction", 0.0) * fov
    drawn = {"angle_deg": p.view_angle(view, mirrored) + _uniform(rng, -j.get("angle_deg", 0), j.get("angle_deg", 0)),
             "tilt_deg": v.tilt_deg + _uniform(rng, -j.get("tilt_deg", 0), j.get("tilt_deg", 0)),
             "roll_deg": _uniform(rng, -j.get("roll_deg", 0), j.get("roll_deg", 0)),
             "sdd_mm": _uniform(rng, *p.sdd_mm), "odd_mm": _uniform(rng, *p.odd_mm), "fov_mm": fov,
             "shift_u_mm": _uniform(rng, -shift, shift), "shift_v_mm": _uniform(rng, -shift, shift)}
    return _as_kind(drawn, v.kind)


def _as_kind(params: dict, kind: str) -> dict:
    """A localizer keeps its angle (the patient's rotation on the table), field and shifts, and
    takes the CT gantry's distances with no tilt or roll; a radiograph keeps every draw."""
    if kind != "localizer":
        return params
    return {**params, "tilt_deg": 0.0, "roll_deg": 0.0, "sdd_mm": LOCALIZER_SDD_MM,
            "odd_mm": LOCALIZER_SDD_MM - LOCALIZER_SID_MM}


def nominal_geometry(p: Protocol, view: str, mirrored: bool = False) -> dict:
    """The view without jitter: nominal angles, middle distances and field of view, no roll or shift."""
    v = p.views[view]
    return _as_kind({"angle_deg": p.view_angle(view, mirrored), "tilt_deg": v.tilt_deg, "roll_deg": 0.0,
                     "sdd_mm": float(np.mean(p.sdd_mm)), "odd_mm": float(np.mean(p.odd_mm)),
                     "fov_mm": float(np.mean(p.fov_mm)), "shift_u_mm": 0.0, "shift_v_mm": 0.0}, v.kind)


def make_geometry(params: dict, isocenter, *, size: int, flips=(False, False), kind: str = "radiograph"):
    """The :class:`bonelab.drr.Geometry` of drawn ``params`` (see :func:`draw_geometry`): a C-arm
    view with the detector turned by ``roll_deg`` in its plane and shifted by ``shift_u_mm`` /
    ``shift_v_mm`` (mm at the isocentre), a square detector of ``size`` pixels covering
    ``fov_mm`` at the isocentre.  ``flips = (flip_rows, flip_cols)`` (:func:`display_flips`)
    reverse the detector's v and u axes, so that the rendered image is the film as it is hung
    (exactly the flipped array: pixel centres are symmetric about the detector centre).

    ``kind="localizer"`` (the view's :attr:`View.kind`): a :class:`bonelab.drr.SlotScan` instead
    (:func:`bonelab.drr.localizer` turned by ``angle_deg`` about the table axis, at the distances
    in ``params``; ``tilt_deg`` and ``roll_deg`` must be 0, as :func:`draw_geometry` gives them),
    ``size`` channels and rows, table increment ``fov_mm / size`` (square pixels at the
    isocentre); the shifts move the patient on the table (source and detector together), so the
    isocentre lands off the image centre by the same mm as for a radiograph.

    >>> g = make_geometry(nominal_geometry(protocol("wrist"), "pa"), (0, 0, 0), size=64)
    >>> g.size
    (64, 64)
    >>> s = make_geometry(nominal_geometry(protocol("localizer"), "localizer-ap"), (0, 0, 0), size=64,
    ...                   kind="localizer")
    >>> type(s).__name__, round(s.pixel[1] * 64, 1), round(s.sdd, 1)   # fov at the isocentre, CT gantry
    ('SlotScan', 415.0, 1040.0)
    """
    from bonelab.drr import carm, localizer

    if kind not in KINDS:
        raise InvalidArgumentError(f"view kind {kind!r} is unknown; use one of {KINDS}.")
    sdd = params["sdd_mm"]
    sid = sdd - params["odd_mm"]
    mag = sdd / sid
    if kind == "localizer":
        if params["tilt_deg"] or params["roll_deg"]:
            raise InvalidArgumentError(f"a localizer has no tilt or roll; got tilt_deg={params['tilt_deg']}, "
                                       f"roll_deg={params['roll_deg']} (draw_geometry gives 0 for localizer views).")
        s = localizer(None, "pa", isocenter=isocenter, sid=sid, sdd=sdd, size=size,
                      pixel=params["fov_mm"] * mag / size, table_mm=params["fov_mm"] / size, angle=params["angle_deg"])
        s = replace(s, u=-s.u if flips[1] else s.u, v=-s.v if flips[0] else s.v)
        return s.translated(params["shift_u_mm"] * s.u + params["shift_v_mm"] * s.v)
    g = carm(None, params["angle_deg"], params["tilt_deg"], isocenter=isocenter, sid=sid, sdd=sdd,
             size=size, pixel=params["fov_mm"] * mag / size)
    u0, v0 = (-g.u if flips[1] else g.u), (-g.v if flips[0] else g.v)
    r = math.radians(params["roll_deg"])
    u = math.cos(r) * u0 + math.sin(r) * v0
    v = -math.sin(r) * u0 + math.cos(r) * v0
    shift = mag * (params["shift_u_mm"] * u + params["shift_v_mm"] * v)
    return replace(g, u=u, v=v, detector_center=g.detector_center + shift)


def display_flips(p: Protocol, view: str, mirrored: bool = False) -> tuple[bool, bool]:
    """``(flip_rows, flip_cols)`` that hang the rendered image of ``view`` by the rule of the
    module docstring: the protocol's ``up`` at the top, seen from the view's ``viewer``
    (``mirrored``: the view of a mirrored subject, see :attr:`Protocol.mirrored_side`).

    >>> display_flips(protocol("wrist"), "pa")      # fingers up, thumb on the viewer's left
    (True, False)
    >>> display_flips(protocol("chest"), "pa")      # the renderer's PA is already hung so
    (False, False)
    """
    g = make_geometry(nominal_geometry(p, view, mirrored), (0.0, 0.0, 0.0), size=2, kind=p.views[view].kind)
    beam = (g.detector_center - g.source) / np.linalg.norm(g.detector_center - g.source)
    eye_looks = {"source": beam, "detector": -beam, "anterior": np.array([0.0, 1.0, 0.0])}[p.views[view].viewer]
    up = np.asarray(p.up, float)
    up = up - (up @ beam) * beam  # the up direction as it appears on the detector plane
    if np.linalg.norm(up) < 1e-6:
        raise InvalidArgumentError(f"protocol {p.name!r}: view {view!r} looks along its up direction; "
                                   "choose another up or view.")
    right = np.cross(eye_looks, up)
    if abs(right @ g.u) < 1e-6:
        raise InvalidArgumentError(f"protocol {p.name!r}: view {view!r} cannot be seen from the "
                                   f"{p.views[view].viewer} (it is edge-on); use viewer='detector' or 'source'.")
    return bool(up @ -g.v < 0), bool(right @ g.u < 0)


def view_geometry(p: Protocol, view: str, isocenter, *, size: int, mirrored: bool = False):
    """The nominal geometry of ``view`` (no jitter) around ``isocenter`` (x, y, z) mm, with the
    detector axes of the hung film (:func:`make_geometry` with :func:`display_flips`): render it
    and the image is the film as a reader sees it.

    >>> g = view_geometry(protocol("wrist"), "pa", (0, 0, 0), size=64)
    >>> (g.u.round(3) + 0.0).tolist(), (g.v.round(3) + 0.0).tolist()   # thumb side (-x) left, fingers (-z) up
    ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    """
    return make_geometry(nominal_geometry(p, view, mirrored), isocenter, size=size,
                         flips=display_flips(p, view, mirrored), kind=p.views[view].kind)


def hung_projection(p: Protocol, view: str, labels, label_values, *, size: int = 64, mirrored: bool = False):
    """Path lengths (L, H, W) mm of ``label_values`` of a label Volume in the nominal ``view`` of
    protocol ``p`` (isocentre: the labels' centroid), hung for reading: where a structure falls
    on the film a reader sees.

    >>> from bonelab import phantoms
    >>> s = phantoms.wrist(0, spacing=1.5)
    >>> radius, ulna = hung_projection(protocol("wrist"), "pa", s.labels, [9, 10])
    >>> cols = np.arange(radius.shape[1])
    >>> bool((radius.sum(0) * cols).sum() / radius.sum() < (ulna.sum(0) * cols).sum() / ulna.sum())  # thumb left
    True
    """
    from bonelab.drr import project_labels
    from bonelab.simulate.jobs import label_center

    g = view_geometry(p, view, label_center(labels, label_values), size=size, mirrored=mirrored)
    return project_labels(labels, g, label_values=label_values)[0].numpy()


def film_directions(p: Protocol, view: str, mirrored: bool = False) -> dict:
    """Which anatomical direction lies at each edge of a hung film of ``view``: ``{"left",
    "right", "top", "bottom": name}`` from the protocol's :attr:`Protocol.directions` (the
    nearest axis; obliques get the dominant one), for :func:`bonelab.viz.orientation_markers`.

    >>> d = film_directions(protocol("wrist"), "pa")
    >>> d["left"], d["right"], d["top"]
    ('radial', 'ulnar', 'distal')
    >>> film_directions(protocol("chest"), "pa")["left"]
    'R'
    """
    g = view_geometry(p, view, (0.0, 0.0, 0.0), size=2, mirrored=mirrored)
    return dict(zip(("left", "right", "top", "bottom"), g.edge_letters(p.direction_names(mirrored)), strict=True))


def preview(subject, p: Protocol, view: str, *, size: int = 256, kvp: float | None = None):
    """One noise-free film of ``subject`` in the nominal ``view`` of protocol ``p`` (no jitter),
    centred on the protocol's ``center`` structures and hung for reading: ``(image, geometry)``
    with ``image`` (H, W) float32 the polychromatic line integral ``-ln I/I0`` (bone bright) at
    ``kvp`` (default: the protocol's fixed physics) and the hung :class:`bonelab.drr.Geometry`
    (a :class:`bonelab.drr.SlotScan` for a localizer view; for :func:`bonelab.viz.film_markers`
    with :meth:`Protocol.direction_names`).

    >>> from bonelab import phantoms
    >>> image, g = preview(phantoms.wrist(0, spacing=2.0), protocol("wrist"), "pa", size=32)
    >>> image.shape, float(image.max()) > 0.5
    ((32, 32), True)
    """
    from bonelab.drr import Renderer
    from bonelab.simulate.jobs import label_center

    values = list(p.select(subject.label_names, p.center)) or None
    mirrored = p.is_mirrored(subject)
    g = view_geometry(p, view, label_center(subject.labels, values), size=size, mirrored=mirrored)
    kvp = float(p.physics["fixed"]["kvp"][0]) if kvp is None else float(kvp)
    return np.asarray(Renderer(subject.ct, kvp=kvp, device="cpu")(g), dtype=np.float32), g


def draw_subject_options(p: Protocol, rng: np.random.Generator) -> dict:
    """One draw of the protocol's per-subject generator options (side, posture, ...)."""
    out = {}
    for key, spec in p.subject_options.items():
        if spec[0] == "choice":
            out[key] = spec[1][int(rng.integers(len(spec[1])))]
        else:
            out[key] = round(_uniform(rng, *spec), 3)
    return out
