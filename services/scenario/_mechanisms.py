"""Defect physics of the pcb-paste scenario: per-board hazards of each defect mechanism.

Every mechanism is a hazard (expected defects per board) built from the *true* conditions of a
board: its print and reflow process (PCB maker), the paste lot it was printed with (paste
supplier) and the stencil (stencil supplier). Most mechanisms need a paste property *and* a process
property at once, so neither company can predict them from its own data alone. See
``docs/scenario.md`` for the formulas in prose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

DEFECT_TYPES: tuple[str, ...] = (
    "none",
    "insufficient",
    "bridging",
    "solder_ball",
    "voiding",
    "tombstoning",
)
"""Values of the multiclass label; index 0 is "no defect", 1.. are the mechanisms in order."""

BACKGROUND_HAZARD = 0.006
"""Hazard of defects from causes outside the model, spread evenly over the five types."""

FRAILTY_SIGMA = 0.25
"""Sigma of the log-normal per-board multiplier on every hazard (unobserved board variation)."""


@dataclass(frozen=True, slots=True)
class Conditions:
    """True conditions of each board (one array element per board)."""

    # paste lot (paste supplier)
    metal_content_pct: FloatArray
    viscosity_pa_s: FloatArray
    thixotropic_index: FloatArray
    d90_um: FloatArray
    flux_activity: FloatArray  # dimensionless score, ~0 for ROL0, ~1 for ROL1
    storage_age_days: FloatArray
    cold_chain_excursions: FloatArray
    # print and reflow process (PCB maker)
    stencil_thickness_um: FloatArray
    area_ratio: FloatArray
    squeegee_speed_mm_s: FloatArray
    squeegee_pressure_n_mm: FloatArray
    separation_speed_mm_s: FloatArray
    ambient_temp_c: FloatArray
    relative_humidity_pct: FloatArray
    reflow_peak_c: FloatArray
    time_above_liquidus_s: FloatArray
    component_density_cm2: FloatArray
    printer_wear: FloatArray  # multiplier of print defects per line (L4: old printer)
    placement_offset: FloatArray  # multiplier of tombstoning per line (L3: worn placer)
    # stencil (stencil supplier)
    wall_roughness_um: FloatArray
    nano_coated: FloatArray  # 0/1
    stencil_prints_k: FloatArray  # thousands of prints
    stencil_tension_n_cm: FloatArray


def sigmoid(x: FloatArray) -> FloatArray:
    """Logistic function, safe from overflow."""
    out: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))
    return out


def fill_index(c: Conditions) -> FloatArray:
    """How hard the aperture is to fill: paste viscosity at squeegee shear over pressure (1 = ok).

    Shear thinning: the viscosity at the squeegee's shear rate falls with speed by the power
    ``-thixotropic_index``, so fill time scales with viscosity * speed^(1 - TI) / pressure.
    """
    shear = (c.squeegee_speed_mm_s / 60.0) ** (1.0 - c.thixotropic_index)
    out: FloatArray = (c.viscosity_pa_s / 200.0) ** 2 * shear / (c.squeegee_pressure_n_mm / 0.25)
    return out


def particles_across(c: Conditions) -> FloatArray:
    """Largest particles (D90) across the aperture width; square aperture: W = 4 * T * AR."""
    wall = np.exp(1.0 * (c.wall_roughness_um - 0.6) - 0.35 * c.nano_coated)
    out: FloatArray = 4.0 * c.stencil_thickness_um * c.area_ratio / c.d90_um / wall
    return out


def slump_index(c: Conditions) -> FloatArray:
    """Cold/hot slump tendency of the paste: less metal and less thixotropy slump more."""
    out: FloatArray = (
        (89.0 - c.metal_content_pct) / 0.5
        + (0.55 - c.thixotropic_index) / 0.05
        + 0.15 * (c.ambient_temp_c - 24.0)
    )
    return out


def oxidation_index(c: Conditions) -> FloatArray:
    """Powder oxidation and flux degradation from storage age and cold-chain excursions."""
    out: FloatArray = c.storage_age_days / 45.0 + 0.7 * c.cold_chain_excursions
    return out


def hazards(c: Conditions) -> FloatArray:
    """Hazard of each mechanism, float64[boards, 5], in the order of ``DEFECT_TYPES[1:]``."""
    # insufficient: poor aperture fill (viscosity x squeegee speed) or poor release
    # (particle size x area ratio, worse with fast separation and rough walls)
    wear = np.exp(0.01 * (c.stencil_prints_k - 60.0))
    fill = 2.5 * sigmoid((np.log(fill_index(c)) - np.log(1.85)) / 0.06)
    sep = c.separation_speed_mm_s**0.3  # relative to 1 mm/s
    release = 2.0 * sigmoid((5.2 - particles_across(c)) / 0.25) * sep
    insufficient = (fill + release) * c.printer_wear * wear
    # bridging: too much paste (thick stencil) that slumps (paste) at fine pitch (density)
    gasket = np.exp(-0.16 * (c.stencil_tension_n_cm - 42.0))
    volume = sigmoid((c.stencil_thickness_um - 138.0) / 4.0)
    bridging = (
        2.5
        * volume
        * sigmoid((slump_index(c) - 1.5) / 0.3)
        * (c.component_density_cm2 / 8.0) ** 0.7
        * gasket
        * c.printer_wear
    )
    # solder balls (and some voids): oxidised paste that picked up moisture
    moist = sigmoid((oxidation_index(c) - 1.8) / 0.2) * sigmoid(
        (c.relative_humidity_pct - 58.0) / 3.0
    )
    solder_ball = 2.5 * moist * gasket
    # voiding: too little flux activity for the thermal budget to clear oxides and volatiles
    budget = (c.time_above_liquidus_s - 60.0) / 12.0 + (c.reflow_peak_c - 245.0) / 6.0
    voiding = 2.0 * sigmoid((-1.9 - c.flux_activity - budget) / 0.25) + 0.5 * moist
    # tombstoning: uneven wetting of small parts at high peak temperature (process only)
    tomb = (
        2.0
        * sigmoid((c.component_density_cm2 - 16.0) / 2.0)
        * sigmoid((c.reflow_peak_c - 250.5) / 1.2)
        * c.placement_offset
    )
    return np.stack([insufficient, bridging, solder_ball, voiding, tomb], axis=1)


def draw_defects(
    c: Conditions, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int64]]:
    """Binary defect and defect type index (into ``DEFECT_TYPES``) of each board.

    Competing risks: a board fails with probability 1 - exp(-H) for total hazard H (times an
    unobserved frailty); a failed board's type is mechanism k with probability h_k / H.
    """
    h = hazards(c) + BACKGROUND_HAZARD / 5.0
    n = h.shape[0]
    frailty = rng.lognormal(-0.5 * FRAILTY_SIGMA**2, FRAILTY_SIGMA, size=n)
    total = h.sum(axis=1)
    defect = rng.random(n) < -np.expm1(-total * frailty)
    pick = rng.random(n) * total
    kind = (h.cumsum(axis=1) < pick[:, None]).sum(axis=1)
    kind = np.minimum(kind, h.shape[1] - 1) + 1
    return defect.astype(np.int8), np.where(defect, kind, 0).astype(np.int64)
