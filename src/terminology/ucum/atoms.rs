//! The UCUM symbols the grammar knows: prefixes, atoms (with whether they
//! take a prefix), and the non-UCUM spellings seen in clinical data with the
//! UCUM code that replaces them.
//!
//! The atoms are a subset of the UCUM table (ucum-essence, case-sensitive
//! `c/s` symbols): all base and SI units, the ISO 1000 and cgs units,
//! international customary, US and British volumes and weights, heat,
//! clinical and arbitrary units, levels and information units. Left out:
//! typesetting units, the US survey lengths and a few historical units; a
//! code that uses one is reported as an unknown unit.

use std::sync::LazyLock;

use super::super::codeset::FxHashMap;

/// Prefix symbols; `da` is the only two-letter decimal one.
pub const PREFIXES: [&str; 24] = [
    "Y", "Z", "E", "P", "T", "G", "M", "k", "h", "da", "d", "c", "m", "u", "n", "p", "f", "a", "z",
    "y", "Ki", "Mi", "Gi", "Ti",
];

/// `(symbol, metric)`: a metric atom may take a prefix.
const ATOMS: &[(&str, bool)] = &[
    // base units
    ("m", true),
    ("s", true),
    ("g", true),
    ("rad", true),
    ("K", true),
    ("C", true),
    ("cd", true),
    // dimensionless
    ("10*", false),
    ("10^", false),
    ("[pi]", false),
    ("%", false),
    ("[ppth]", false),
    ("[ppm]", false),
    ("[ppb]", false),
    ("[pptr]", false),
    // SI
    ("mol", true),
    ("sr", true),
    ("Hz", true),
    ("N", true),
    ("Pa", true),
    ("J", true),
    ("W", true),
    ("A", true),
    ("V", true),
    ("F", true),
    ("Ohm", true),
    ("S", true),
    ("Wb", true),
    ("Cel", true),
    ("T", true),
    ("H", true),
    ("lm", true),
    ("lx", true),
    ("Bq", true),
    ("Gy", true),
    ("Sv", true),
    // ISO 1000
    ("gon", false),
    ("deg", false),
    ("'", false),
    ("''", false),
    ("l", true),
    ("L", true),
    ("ar", true),
    ("min", false),
    ("h", false),
    ("d", false),
    ("a_t", false),
    ("a_j", false),
    ("a_g", false),
    ("a", false),
    ("wk", false),
    ("mo_s", false),
    ("mo_j", false),
    ("mo_g", false),
    ("mo", false),
    ("t", true),
    ("bar", true),
    ("u", true),
    ("eV", true),
    ("AU", false),
    ("pc", true),
    // natural constants
    ("[c]", true),
    ("[h]", true),
    ("[k]", true),
    ("[eps_0]", true),
    ("[mu_0]", true),
    ("[e]", true),
    ("[m_e]", true),
    ("[m_p]", true),
    ("[G]", true),
    ("[g]", true),
    ("[ly]", true),
    ("gf", true),
    // cgs
    ("Ky", true),
    ("Gal", true),
    ("dyn", true),
    ("erg", true),
    ("P", true),
    ("Bi", true),
    ("St", true),
    ("Mx", true),
    ("G", true),
    ("Oe", true),
    ("Gb", true),
    ("sb", true),
    ("Lmb", true),
    ("ph", true),
    ("Ci", true),
    ("R", true),
    ("RAD", true),
    ("REM", true),
    // international customary
    ("[in_i]", false),
    ("[ft_i]", false),
    ("[yd_i]", false),
    ("[mi_i]", false),
    ("[fth_i]", false),
    ("[nmi_i]", false),
    ("[kn_i]", false),
    ("[sin_i]", false),
    ("[sft_i]", false),
    ("[syd_i]", false),
    ("[cin_i]", false),
    ("[cft_i]", false),
    ("[cyd_i]", false),
    ("[bf_i]", false),
    ("[cr_i]", false),
    ("[mil_i]", false),
    ("[cml_i]", false),
    ("[hd_i]", false),
    // US and British volumes
    ("[gal_us]", false),
    ("[bbl_us]", false),
    ("[qt_us]", false),
    ("[pt_us]", false),
    ("[gil_us]", false),
    ("[foz_us]", false),
    ("[fdr_us]", false),
    ("[min_us]", false),
    ("[crd_us]", false),
    ("[bu_us]", false),
    ("[gal_wi]", false),
    ("[pk_us]", false),
    ("[dqt_us]", false),
    ("[dpt_us]", false),
    ("[tbs_us]", false),
    ("[tsp_us]", false),
    ("[cup_us]", false),
    ("[foz_m]", false),
    ("[cup_m]", false),
    ("[tsp_m]", false),
    ("[tbs_m]", false),
    ("[gal_br]", false),
    ("[pk_br]", false),
    ("[bu_br]", false),
    ("[qt_br]", false),
    ("[pt_br]", false),
    ("[gil_br]", false),
    ("[foz_br]", false),
    ("[fdr_br]", false),
    ("[min_br]", false),
    // weights
    ("[gr]", false),
    ("[lb_av]", false),
    ("[oz_av]", false),
    ("[dr_av]", false),
    ("[scwt_av]", false),
    ("[lcwt_av]", false),
    ("[ston_av]", false),
    ("[lton_av]", false),
    ("[stone_av]", false),
    ("[pwt_tr]", false),
    ("[oz_tr]", false),
    ("[lb_tr]", false),
    ("[sc_ap]", false),
    ("[dr_ap]", false),
    ("[oz_ap]", false),
    ("[lb_ap]", false),
    ("[oz_m]", false),
    ("[lbf_av]", false),
    // heat
    ("[degF]", false),
    ("[degR]", false),
    ("[degRe]", false),
    ("cal_[15]", true),
    ("cal_[20]", true),
    ("cal_m", true),
    ("cal_IT", true),
    ("cal_th", true),
    ("cal", true),
    ("[Cal]", false),
    ("[Btu_39]", false),
    ("[Btu_59]", false),
    ("[Btu_60]", false),
    ("[Btu_m]", false),
    ("[Btu_IT]", false),
    ("[Btu_th]", false),
    ("[Btu]", false),
    ("[HP]", false),
    ("tex", true),
    ("[den]", false),
    // clinical
    ("m[H2O]", true),
    ("m[Hg]", true),
    ("[in_i'H2O]", false),
    ("[in_i'Hg]", false),
    ("[PRU]", false),
    ("[wood'U]", false),
    ("[diop]", false),
    ("[p'diop]", false),
    ("%[slope]", false),
    ("[mesh_i]", false),
    ("[Ch]", false),
    ("[drp]", false),
    ("[hnsf'U]", false),
    ("[MET]", false),
    ("[hp'_X]", false),
    ("[hp'_C]", false),
    ("[hp'_M]", false),
    ("[hp'_Q]", false),
    ("[hp_X]", false),
    ("[hp_C]", false),
    ("[hp_M]", false),
    ("[hp_Q]", false),
    ("[kp_X]", false),
    ("[kp_C]", false),
    ("[kp_M]", false),
    ("[kp_Q]", false),
    ("eq", true),
    ("osm", true),
    ("[pH]", false),
    ("g%", true),
    ("[S]", false),
    ("[HPF]", false),
    ("[LPF]", false),
    ("kat", true),
    ("U", true),
    ("[iU]", true),
    ("[IU]", true),
    ("[arb'U]", false),
    ("[USP'U]", false),
    ("[GPL'U]", false),
    ("[MPL'U]", false),
    ("[APL'U]", false),
    ("[beth'U]", false),
    ("[anti'Xa'U]", false),
    ("[todd'U]", false),
    ("[dye'U]", false),
    ("[smgy'U]", false),
    ("[bdsk'U]", false),
    ("[ka'U]", false),
    ("[knk'U]", false),
    ("[mclg'U]", false),
    ("[tb'U]", false),
    ("[CCID_50]", false),
    ("[TCID_50]", false),
    ("[EID_50]", false),
    ("[PFU]", false),
    ("[FFU]", false),
    ("[CFU]", false),
    ("[IR]", false),
    ("[BAU]", false),
    ("[AU]", false),
    ("[Amb'a'1'U]", false),
    ("[PNU]", false),
    ("[Lf]", false),
    ("[D'ag'U]", false),
    ("[FEU]", false),
    ("[ELU]", false),
    ("[EU]", false),
    // levels
    ("Np", true),
    ("B", true),
    ("B[SPL]", true),
    ("B[V]", true),
    ("B[mV]", true),
    ("B[uV]", true),
    ("B[10.nV]", true),
    ("B[W]", true),
    ("B[kW]", true),
    // miscellaneous and information
    ("st", true),
    ("Ao", false),
    ("b", false),
    ("att", false),
    ("mho", true),
    ("[psi]", false),
    ("circ", false),
    ("sph", false),
    ("[car_m]", false),
    ("[car_Au]", false),
    ("[smoot]", false),
    ("[NTU]", false),
    ("[FNU]", false),
    ("bit_s", false),
    ("bit", true),
    ("By", true),
    ("Bd", true),
];

/// Non-UCUM spellings of units found in clinical data, with the UCUM code.
/// Only invalid codes are listed: `ft` (femtotonne) or `pH` (picohenry) are
/// valid UCUM however unlikely, and are left alone.
const HINTS: &[(&str, &str)] = &[
    ("mcg", "ug"),
    ("mEq", "meq"),
    ("hr", "h"),
    ("hrs", "h"),
    ("sec", "s"),
    ("secs", "s"),
    ("mins", "min"),
    ("cc", "mL"),
    ("drop", "[drp]"),
    ("drops", "[drp]"),
    ("gtt", "[drp]"),
    ("ea", "{each}"),
    ("each", "{each}"),
    ("tab", "{tablet}"),
    ("tabs", "{tablet}"),
    ("IU", "[IU]"),
    ("units", "U"),
    ("unit", "U"),
    ("mmHg", "mm[Hg]"),
    ("degF", "[degF]"),
    ("°F", "[degF]"),
    ("°C", "Cel"),
    ("degC", "Cel"),
    ("in", "[in_i]"),
    ("inch", "[in_i]"),
    ("lb", "[lb_av]"),
    ("lbs", "[lb_av]"),
    ("oz", "[oz_av]"),
    ("gm", "g"),
    ("gms", "g"),
    ("mcL", "uL"),
    ("µg", "ug"),
    ("μg", "ug"),
    ("µL", "uL"),
    ("μL", "uL"),
    ("yr", "a"),
    ("yrs", "a"),
    ("year", "a"),
    ("years", "a"),
    ("day", "d"),
    ("days", "d"),
    ("week", "wk"),
    ("weeks", "wk"),
    ("month", "mo"),
    ("months", "mo"),
    ("bpm", "/min"),
    ("beats/min", "/min"),
    ("breaths/min", "/min"),
    ("ppm", "[ppm]"),
    ("kcal/day", "kcal/d"),
    ("mL/hr", "mL/h"),
    ("ml/hr", "mL/h"),
    ("mg/hr", "mg/h"),
    ("KG", "kg"),
];

/// An atom's entry: whether it takes a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Atom {
    pub metric: bool,
}

static ATOM_TABLE: LazyLock<FxHashMap<&'static str, Atom>> = LazyLock::new(|| {
    ATOMS
        .iter()
        .map(|&(symbol, metric)| (symbol, Atom { metric }))
        .collect()
});

static HINT_TABLE: LazyLock<FxHashMap<&'static str, &'static str>> =
    LazyLock::new(|| HINTS.iter().copied().collect());

/// The atom spelled exactly `symbol`.
pub fn atom(symbol: &str) -> Option<Atom> {
    ATOM_TABLE.get(symbol).copied()
}

/// The UCUM code for a known non-UCUM spelling (a whole code or one symbol).
pub fn hint(spelling: &str) -> Option<&'static str> {
    HINT_TABLE.get(spelling).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_symbol_twice() {
        assert_eq!(ATOM_TABLE.len(), ATOMS.len(), "an atom is listed twice");
        assert_eq!(HINT_TABLE.len(), HINTS.len(), "a hint is listed twice");
    }

    #[test]
    fn no_hint_shadows_a_valid_code() {
        for (wrong, right) in HINTS {
            assert!(
                super::super::validate(wrong).is_err(),
                "{wrong} is valid UCUM"
            );
            assert!(
                super::super::validate(right).is_ok(),
                "hint {right} is not valid UCUM"
            );
        }
    }
}
