//! The mapping pass: one walk over the segments, in order, keeping the
//! context v2 expresses by position (current patient, visit, order group,
//! the resource an NTE annotates), plus [`Ctx`], the shared state every
//! segment mapper writes through (resources, ids, warnings, timestamps).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::FixedOffset;
use serde_json::{Value as Json, json};

use super::super::dtm::parse_dtm;
use super::super::parse::{Message, Segment, Value};
use super::{Conversion, MapError, MapOptions, MapWarning};
use super::{encounter, header, order, patient, result};

/// Which message family is being mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Adt,
    Orm,
    Oru,
}

fn kind(code: &str, trigger: &str) -> Option<Kind> {
    match (code, trigger) {
        (
            "ADT",
            "A01" | "A02" | "A03" | "A04" | "A05" | "A06" | "A07" | "A08" | "A11" | "A13" | "A14"
            | "A28" | "A31" | "A40",
        ) => Some(Kind::Adt),
        ("ORM", "O01") => Some(Kind::Orm),
        ("ORU", "R01") => Some(Kind::Oru),
        _ => None,
    }
}

/// Shared state of one conversion.
pub(super) struct Ctx<'m> {
    pub msg: &'m Message<'m>,
    pub tz: FixedOffset,
    /// MSH-4 label: part of most id keys.
    pub facility: String,
    pub meta: Json,
    pub resources: Vec<Json>,
    by_ref: HashMap<String, usize>,
    pub warnings: Vec<MapWarning>,
    tz_seen: BTreeSet<(String, usize)>,
    pub tz_assumed: bool,
}

impl<'m> Ctx<'m> {
    pub fn warn(&mut self, w: MapWarning) {
        self.warnings.push(w);
    }

    fn insert(&mut self, mut r: Json, seg: &Segment<'_>, shared: bool) -> String {
        let ty = r["resourceType"].as_str().unwrap_or("Resource").to_string();
        let id = r["id"].as_str().unwrap_or("").to_string();
        let mut reference = format!("{ty}/{id}");
        if self.by_ref.contains_key(&reference) {
            if shared {
                return reference;
            }
            let mut n = 2;
            while self.by_ref.contains_key(&format!("{reference}-{n}")) {
                n += 1;
            }
            let new_id = format!("{id}-{n}");
            self.warn(MapWarning::DuplicateId {
                resource_type: ty.clone(),
                id: id.clone(),
                segment_index: seg.index() + 1,
            });
            r["id"] = Json::String(new_id.clone());
            reference = format!("{ty}/{new_id}");
        }
        r["meta"] = self.meta.clone();
        self.by_ref.insert(reference.clone(), self.resources.len());
        self.resources.push(r);
        reference
    }

    /// Add a resource; a repeated id is made unique (and warned about).
    pub fn push(&mut self, r: Json, seg: &Segment<'_>) -> String {
        self.insert(r, seg, false)
    }

    /// Add a resource that many segments may name (Practitioner, Location):
    /// the same id is the same resource, added once.
    pub fn push_shared(&mut self, r: Json, seg: &Segment<'_>) -> String {
        self.insert(r, seg, true)
    }

    pub fn get_mut(&mut self, reference: &str) -> Option<&mut Json> {
        let i = *self.by_ref.get(reference)?;
        self.resources.get_mut(i)
    }

    /// Append `item` to the array `field` of the resource.
    pub fn append(&mut self, reference: &str, field: &str, item: Json) {
        if let Some(r) = self.get_mut(reference) {
            match r.get_mut(field).and_then(Json::as_array_mut) {
                Some(a) => a.push(item),
                None => r[field] = Json::Array(vec![item]),
            }
        }
    }

    fn parse_time(
        &mut self,
        seg: &Segment<'_>,
        field: usize,
        v: Value<'_>,
    ) -> Option<super::super::dtm::Dtm> {
        let raw = v.part(1).opt()?;
        match parse_dtm(&raw) {
            Ok(d) => Some(d),
            Err(reason) => {
                self.warn(MapWarning::InvalidTimestamp {
                    segment: seg.id().to_string(),
                    segment_index: seg.index() + 1,
                    field,
                    value: raw,
                    reason,
                });
                None
            }
        }
    }

    fn note_tz(&mut self, seg: &Segment<'_>, field: usize, assumed: bool) {
        if assumed {
            self.tz_assumed = true;
            if self.tz_seen.insert((seg.id().to_string(), field)) {
                let offset = self.tz.to_string();
                self.warn(MapWarning::TimezoneAssumed {
                    segment: seg.id().to_string(),
                    field,
                    offset,
                });
            }
        }
    }

    /// A DTM/TS field as a FHIR dateTime (`None` when empty or invalid, warned).
    pub fn datetime(&mut self, seg: &Segment<'_>, field: usize, v: Value<'_>) -> Option<String> {
        let d = self.parse_time(seg, field, v)?;
        let (s, assumed) = d.to_datetime(self.tz);
        self.note_tz(seg, field, assumed);
        Some(s)
    }

    /// A DTM/TS field as a FHIR instant.
    pub fn instant(&mut self, seg: &Segment<'_>, field: usize, v: Value<'_>) -> Option<String> {
        let d = self.parse_time(seg, field, v)?;
        let (s, assumed) = d.to_instant_string(self.tz);
        self.note_tz(seg, field, assumed);
        Some(s)
    }

    /// A DT/DTM field as a FHIR date.
    pub fn date(&mut self, seg: &Segment<'_>, field: usize, v: Value<'_>) -> Option<String> {
        Some(self.parse_time(seg, field, v)?.to_date())
    }

    /// Look a code up; an unknown (or, with `required`, a missing) code is warned.
    pub fn code(
        &mut self,
        (seg, field): (&Segment<'_>, usize),
        table: &'static str,
        code: Option<String>,
        required: bool,
        map: fn(&str) -> Option<&'static str>,
    ) -> Option<&'static str> {
        let mapped = code.as_deref().and_then(map);
        if mapped.is_none() && (code.is_some() || required) {
            self.warn(MapWarning::UnmappedCode {
                segment: seg.id().to_string(),
                segment_index: seg.index() + 1,
                field,
                table,
                code: code.unwrap_or_default(),
            });
        }
        mapped
    }

    /// Warn when a field repeats but only one repetition can be kept.
    pub fn single(&mut self, seg: &Segment<'_>, field: usize) -> Value<'m> {
        let f = self.seg_field(seg, field);
        let total = f.reps().filter(|r| r.has_value()).count();
        if total > 1 {
            self.warn(MapWarning::RepetitionsDropped {
                segment: seg.id().to_string(),
                segment_index: seg.index() + 1,
                field,
                total,
            });
        }
        f.rep(1)
    }

    fn seg_field(&self, seg: &Segment<'_>, field: usize) -> Value<'m> {
        // Re-borrow through the message so the value lives as long as `Ctx`.
        self.msg
            .segment(seg.index())
            .map(|s| s.field(field))
            .unwrap_or_else(|| seg_empty(self.msg))
    }
}

fn seg_empty<'m>(msg: &'m Message<'m>) -> Value<'m> {
    msg.header().field(usize::MAX)
}

/// What the walk knows at the current segment.
#[derive(Default)]
struct State<'m> {
    patient: Option<patient::PatientRef>,
    encounter: Option<String>,
    pending_orc: Option<Segment<'m>>,
    group: Option<super::group::Group>,
    /// The resource an NTE here would annotate.
    note: Option<String>,
}

impl<'m> State<'m> {
    /// Close the order group; an ORC no OBR followed becomes a ServiceRequest alone.
    fn close_order(&mut self, ctx: &mut Ctx<'m>, kind: Kind) {
        if let Some(orc) = self.pending_orc.take() {
            let g = order::open(
                ctx,
                kind,
                Some(orc),
                None,
                self.patient.as_ref(),
                self.encounter.as_deref(),
            );
            self.note = g.sr.clone();
        }
        self.group = None;
    }
}

pub(super) fn convert(msg: &Message<'_>, opts: &MapOptions) -> Result<Conversion, MapError> {
    let (code, trigger, _) = msg.message_type();
    let Some(kind) = kind(&code, &trigger) else {
        return Err(MapError::UnsupportedMessageType {
            message_type: msg.header().field(9).text().into_owned(),
        });
    };
    let trigger = trigger.into_owned();
    let mut info = header::message_info(msg, opts)?;
    let mut ctx = Ctx {
        msg,
        tz: opts.timezone,
        facility: info.sending_facility.clone().unwrap_or_default(),
        meta: json!({}),
        resources: Vec::new(),
        by_ref: HashMap::new(),
        warnings: Vec::new(),
        tz_seen: BTreeSet::new(),
        tz_assumed: false,
    };
    ctx.meta = header::meta(&mut ctx, &info);

    let mut st = State::default();
    let mut mapped = BTreeMap::<String, u64>::new();
    let mut unmapped = BTreeMap::<String, u64>::new();
    let mut z_segments = Vec::new();
    for seg in msg.all() {
        let id = seg.id();
        let done = match id {
            "MSH" | "EVN" | "SFT" => true,
            "PID" => {
                st.close_order(&mut ctx, kind);
                st.patient = Some(patient::map_pid(&mut ctx, &seg)?);
                st.encounter = None;
                st.note = None;
                true
            }
            "NK1" => match &st.patient {
                Some(p) => patient::map_nk1(&mut ctx, &seg, p),
                None => no_context(&mut ctx, &seg, "a PID before it"),
            },
            "MRG" if kind == Kind::Adt => match &st.patient {
                Some(p) => patient::map_mrg(&mut ctx, &seg, p),
                None => no_context(&mut ctx, &seg, "a PID before it"),
            },
            "PV1" => {
                let e = encounter::map_pv1(&mut ctx, &seg, st.patient.as_ref(), &trigger);
                st.encounter = Some(e);
                st.note = None;
                true
            }
            "PV2" => match st.encounter.clone() {
                Some(e) => encounter::map_pv2(&mut ctx, &seg, &e),
                None => no_context(&mut ctx, &seg, "a PV1 before it"),
            },
            "ORC" if kind != Kind::Adt => {
                st.close_order(&mut ctx, kind);
                st.pending_orc = Some(seg);
                st.note = None;
                true
            }
            "OBR" if kind != Kind::Adt => {
                let orc = st.pending_orc.take();
                st.group = None;
                let g = order::open(
                    &mut ctx,
                    kind,
                    orc,
                    Some(&seg),
                    st.patient.as_ref(),
                    st.encounter.as_deref(),
                );
                st.note = g.dr.clone().or_else(|| g.sr.clone());
                st.group = Some(g);
                true
            }
            "TQ1" => match st.group.as_ref().and_then(|g| g.sr.clone()) {
                Some(sr) => order::map_tq1(&mut ctx, &seg, &sr),
                None => no_context(&mut ctx, &seg, "an ORC/OBR before it"),
            },
            "NTE" => match st.note.clone() {
                Some(target) => order::map_nte(&mut ctx, &seg, &target),
                None => false,
            },
            "OBX" => {
                let obs = result::map_obx(
                    &mut ctx,
                    &seg,
                    st.group.as_mut(),
                    st.patient.as_ref(),
                    st.encounter.as_deref(),
                );
                st.note = Some(obs);
                true
            }
            "SPM" => {
                let spm = result::map_spm(&mut ctx, &seg, st.group.as_mut(), st.patient.as_ref());
                st.note = None;
                spm.is_some()
            }
            _ => {
                if id.starts_with('Z') {
                    z_segments.push(seg.raw().to_string());
                }
                false
            }
        };
        let counts = if done { &mut mapped } else { &mut unmapped };
        *counts.entry(id.to_string()).or_insert(0) += 1;
    }
    st.close_order(&mut ctx, kind);
    if kind == Kind::Adt && st.patient.is_none() {
        return Err(MapError::MissingSegment {
            segment: "PID",
            message_type: msg.header().field(9).text().into_owned(),
        });
    }
    let resources = header::finish(&mut ctx, &info);
    info.timezone_assumed |= ctx.tz_assumed;
    Ok(Conversion {
        resources,
        info,
        mapped_segments: mapped,
        unmapped_segments: unmapped,
        z_segments,
        warnings: ctx.warnings,
    })
}

fn no_context(ctx: &mut Ctx<'_>, seg: &Segment<'_>, needs: &'static str) -> bool {
    ctx.warn(MapWarning::NoContext {
        segment: seg.id().to_string(),
        segment_index: seg.index() + 1,
        needs,
    });
    false
}
