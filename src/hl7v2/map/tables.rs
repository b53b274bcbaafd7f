//! Vocabulary maps, from the HL7 v2-to-FHIR IG concept maps (`mappings/codesystems`).
//! A code a map does not know returns `None`; the caller decides whether to
//! keep the original coding and records a warning.

/// v2 coding system name (CWE.3) → FHIR system URI.
pub fn code_system_uri(name: &str) -> String {
    let n = name.trim();
    let upper = n.to_ascii_uppercase();
    let known = match upper.as_str() {
        "LN" | "LOINC" => Some("http://loinc.org"),
        "SCT" | "SNM" | "SNOMED" | "SNOMEDCT" | "SNOMED-CT" | "PH_SNOMED-CT" => {
            Some("http://snomed.info/sct")
        }
        "UCUM" => Some("http://unitsofmeasure.org"),
        "I10" | "I10C" | "ICD10CM" | "ICD-10-CM" => Some("http://hl7.org/fhir/sid/icd-10-cm"),
        "I9" | "I9C" | "I9CDX" | "ICD9CM" => Some("http://hl7.org/fhir/sid/icd-9-cm"),
        "C4" | "C5" | "CPT" | "CPT4" => Some("http://www.ama-assn.org/go/cpt"),
        "NDC" => Some("http://hl7.org/fhir/sid/ndc"),
        "RXNORM" => Some("http://www.nlm.nih.gov/research/umls/rxnorm"),
        "CVX" => Some("http://hl7.org/fhir/sid/cvx"),
        "CDCREC" => Some("urn:oid:2.16.840.1.113883.6.238"),
        "ISO3166_1" => Some("urn:iso:std:iso:3166"),
        "NULLFL" => Some("http://terminology.hl7.org/CodeSystem/v3-NullFlavor"),
        _ => None,
    };
    if let Some(uri) = known {
        return uri.to_string();
    }
    // HL7nnnn / HL7-nnnn tables.
    if let Some(num) = upper
        .strip_prefix("HL7")
        .map(|r| r.trim_start_matches('-'))
        .filter(|r| r.len() == 4 && r.bytes().all(|b| b.is_ascii_digit()))
    {
        return format!("http://terminology.hl7.org/CodeSystem/v2-{num}");
    }
    if n.starts_with("urn:") || n.starts_with("http://") || n.starts_with("https://") {
        return n.to_string();
    }
    if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit() || b == b'.') && n.contains('.') {
        return format!("urn:oid:{n}");
    }
    format!(
        "urn:fhirlake:v2:codesystem:{}",
        super::super::ids::urn_part(n)
    )
}

/// Table 0001 → administrative-gender.
pub fn gender(code: &str) -> Option<&'static str> {
    Some(match code {
        "F" => "female",
        "M" => "male",
        "O" | "A" | "N" => "other",
        "U" => "unknown",
        _ => return None,
    })
}

/// Table 0002 → (system, code, display) in v3-MaritalStatus / v3-NullFlavor.
pub fn marital(code: &str) -> Option<(&'static str, &'static str, &'static str)> {
    const MS: &str = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus";
    const NF: &str = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor";
    Some(match code {
        "A" | "E" => (MS, "L", "Legally Separated"),
        "D" => (MS, "D", "Divorced"),
        "M" => (MS, "M", "Married"),
        "S" => (MS, "S", "Never Married"),
        "W" => (MS, "W", "Widowed"),
        "C" => (MS, "C", "Common Law"),
        "G" | "P" | "R" => (MS, "T", "Domestic partner"),
        "N" => (MS, "A", "Annulled"),
        "I" => (MS, "I", "Interlocutory"),
        "B" => (MS, "U", "unmarried"),
        "U" => (NF, "UNK", "Unknown"),
        "O" => (NF, "OTH", "Other"),
        "T" => (NF, "NAVU", "Not available"),
        _ => return None,
    })
}

/// Table 0200 → name-use.
pub fn name_use(code: &str) -> Option<&'static str> {
    Some(match code {
        "BAD" => "old",
        "D" => "usual",
        "L" | "R" => "official",
        "M" => "maiden",
        "MSK" => "anonymous",
        "N" => "nickname",
        "NAV" | "TEMP" => "temp",
        _ => return None,
    })
}

/// Table 0190 → (address-use, address-type).
pub fn address_use_type(code: &str) -> (Option<&'static str>, Option<&'static str>) {
    match code {
        "BA" => (Some("old"), None),
        "BI" => (Some("billing"), None),
        "C" => (Some("temp"), None),
        "B" | "O" => (Some("work"), None),
        "H" => (Some("home"), None),
        "M" | "SH" => (None, Some("postal")),
        _ => (None, None),
    }
}

/// Table 0201 → contact-point-use.
pub fn telecom_use(code: &str) -> Option<&'static str> {
    Some(match code {
        "PRN" => "home",
        "WPN" => "work",
        "PRS" => "mobile",
        _ => return None,
    })
}

/// Table 0202 → (contact-point-system, implied use).
pub fn telecom_system(code: &str) -> Option<(&'static str, Option<&'static str>)> {
    Some(match code.to_ascii_uppercase().as_str() {
        "PH" => ("phone", None),
        "FX" => ("fax", None),
        "CP" => ("phone", Some("mobile")),
        "BP" => ("pager", None),
        "INTERNET" | "X.400" => ("email", None),
        "MD" | "SAT" | "TDD" | "TTY" => ("other", None),
        _ => return None,
    })
}

/// Table 0004 → Encounter.class (system, code, display).
pub fn encounter_class(code: &str) -> Option<(&'static str, &'static str, &'static str)> {
    const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
    const V2: &str = "http://terminology.hl7.org/CodeSystem/v2-0004";
    Some(match code {
        "E" => (ACT, "EMER", "emergency"),
        "I" => (ACT, "IMP", "inpatient encounter"),
        "O" => (ACT, "AMB", "ambulatory"),
        "P" => (ACT, "PRENC", "pre-admission"),
        "R" => (V2, "R", "Recurring patient"),
        "B" => (V2, "B", "Obstetrics"),
        "C" => (V2, "C", "Commercial Account"),
        "N" => (V2, "N", "Not Applicable"),
        "U" => (V2, "U", "Unknown"),
        _ => return None,
    })
}

/// Table 0004 → Encounter.status when the event does not say (PatientClass[EncounterStatus]).
pub fn class_status(code: &str) -> &'static str {
    match code {
        "P" => "planned",
        "U" | "" => "unknown",
        _ => "in-progress",
    }
}

/// Trigger event → Encounter.status (Event[EncounterStatus]); `None`: use PV1.
pub fn event_status(event: &str) -> Option<&'static str> {
    Some(match event {
        // A04 "register a patient" is an arrival that has been registered; the
        // brief's primary option (in-progress) is used rather than the IG's
        // `planned`, which reads A04 as a pre-registration.
        "A01" | "A02" | "A04" | "A06" | "A07" | "A13" => "in-progress",
        "A03" => "finished",
        "A05" | "A14" => "planned",
        "A11" => "cancelled",
        _ => return None,
    })
}

/// Table 0085 → Observation.status.
pub fn observation_status(code: &str) -> Option<&'static str> {
    Some(match code {
        "A" | "B" => "amended",
        "C" => "corrected",
        "D" | "W" => "entered-in-error",
        "F" => "final",
        "P" => "preliminary",
        "X" => "cancelled",
        // Not in the IG map: "specimen in lab, results pending" is what
        // FHIR calls `registered`.
        "I" => "registered",
        _ => return None,
    })
}

/// Table 0123 → DiagnosticReport.status.
pub fn report_status(code: &str) -> Option<&'static str> {
    Some(match code {
        "O" | "I" | "S" => "registered",
        "P" => "preliminary",
        "C" => "corrected",
        "R" => "partial",
        "F" => "final",
        "X" => "cancelled",
        _ => return None,
    })
}

/// Table 0038 (ORC-5) → ServiceRequest.status.
pub fn order_status(code: &str) -> Option<&'static str> {
    Some(match code {
        "CA" | "DC" | "RP" => "revoked",
        "CM" => "completed",
        "ER" => "entered-in-error",
        "HD" => "on-hold",
        "IP" | "SC" => "active",
        _ => return None,
    })
}

/// Table 0119 (ORC-1, used when ORC-5 is empty) → ServiceRequest.status.
pub fn order_control_status(code: &str) -> Option<&'static str> {
    Some(match code {
        "AF" | "CA" | "HD" | "NW" | "OK" | "PR" | "PY" | "RL" | "RO" | "RQ" => "active",
        "CR" | "DC" | "DF" | "DR" | "OC" | "OD" => "revoked",
        "FU" => "completed",
        "HR" | "OH" => "on-hold",
        _ => return None,
    })
}

/// Table 0027 priority → ServiceRequest.priority.
pub fn priority(code: &str) -> Option<&'static str> {
    Some(match code {
        "S" => "stat",
        "A" => "asap",
        "R" => "routine",
        _ => return None,
    })
}

/// Table 0078 → v3 ObservationInterpretation display (the code is the same).
pub fn interpretation(code: &str) -> Option<&'static str> {
    Some(match code {
        "<" => "Off scale low",
        ">" => "Off scale high",
        "A" => "Abnormal",
        "AA" => "Critical abnormal",
        "B" => "Better",
        "CAR" => "Carrier",
        "D" => "Significant change down",
        "DET" => "Detected",
        "E" => "Equivocal",
        "EX" => "outside threshold",
        "EXP" => "Expected",
        "H" => "High",
        "HH" => "Critical high",
        "HU" => "Significantly high",
        "I" => "Intermediate",
        "IE" => "Insufficient evidence",
        "IND" => "Indeterminate",
        "L" => "Low",
        "LL" => "Critical low",
        "LU" => "Significantly low",
        "MS" => "moderately susceptible",
        "N" => "Normal",
        "NCL" => "No CLSI defined breakpoint",
        "ND" => "Not detected",
        "NEG" => "Negative",
        "NR" => "Non-reactive",
        "NS" => "Non-susceptible",
        "POS" => "Positive",
        "R" => "Resistant",
        "RR" => "Reactive",
        "S" => "Susceptible",
        "SDD" => "Susceptible-dose dependent",
        "SYN-R" => "Synergy - resistant",
        "SYN-S" => "Synergy - susceptible",
        "U" => "Significant change up",
        "UNE" => "Unexpected",
        "VS" => "very susceptible",
        "W" => "Worse",
        "WR" => "Weakly reactive",
        _ => return None,
    })
}

/// Table 0203 identifier type display.
pub fn identifier_type_display(code: &str) -> Option<&'static str> {
    Some(match code {
        "MR" => "Medical record number",
        "PI" => "Patient internal identifier",
        "PT" => "Patient external identifier",
        "SS" => "Social Security number",
        "SB" => "Social Beneficiary Identifier",
        "DL" => "Driver's license number",
        "AN" => "Account number",
        "VN" => "Visit number",
        "PN" => "Person number",
        "NI" => "National unique individual identifier",
        "NPI" => "National provider identifier",
        "PLAC" => "Placer Identifier",
        "FILL" => "Filler Identifier",
        "PGN" => "Placer Group Number",
        "EI" => "Employee number",
        "MB" => "Member Number",
        _ => return None,
    })
}

/// OMB race category (CDC race code) → display.
pub fn omb_race(code: &str) -> Option<&'static str> {
    Some(match code {
        "1002-5" => "American Indian or Alaska Native",
        "2028-9" => "Asian",
        "2054-5" => "Black or African American",
        "2076-8" => "Native Hawaiian or Other Pacific Islander",
        "2106-3" => "White",
        _ => return None,
    })
}

/// OMB ethnicity category, also from table 0189 (H/N) → (code, display).
pub fn omb_ethnicity(code: &str) -> Option<(&'static str, &'static str)> {
    Some(match code {
        "2135-2" | "H" => ("2135-2", "Hispanic or Latino"),
        "2186-5" | "N" => ("2186-5", "Not Hispanic or Latino"),
        _ => return None,
    })
}

/// v3-ParticipationType display for the PV1 participants we map.
pub fn participation_display(code: &str) -> &'static str {
    match code {
        "ATND" => "attender",
        "REF" => "referrer",
        "CON" => "consultant",
        "ADM" => "admitter",
        _ => "participation",
    }
}
