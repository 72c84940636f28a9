//! Whether two ways of running the model give the same answers: the CPU
//! against a GPU, static images against tracking. "The same" is what the
//! farm stores: the Good/Bad label (or no person) and both angles within
//! [`MAX_ANGLE_DIFF_DEG`]. Pure; used by `bench pose` and the GPU test.

use posture_core::posture::{Assessment, Pose, Thresholds, assess};

/// Largest neck or torso angle difference accepted between two runs.
pub const MAX_ANGLE_DIFF_DEG: f32 = 0.5;

/// The comparison of a reference run with another, image by image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Agreement {
    /// Images compared.
    pub images: usize,
    /// Images where both runs measured angles.
    pub measured: usize,
    /// Largest |Δ neck angle|, degrees.
    pub max_neck_deg: f32,
    /// Largest |Δ torso angle|, degrees.
    pub max_torso_deg: f32,
    /// Images whose label (Good/Bad/no person/unmeasurable) or facing side
    /// differs, with both labels.
    pub mismatches: Vec<String>,
}

impl Agreement {
    /// Adds one image: `reference` and `other` are the two runs' poses.
    pub fn add(
        &mut self,
        name: &str,
        reference: Option<&Pose>,
        other: Option<&Pose>,
        thresholds: &Thresholds,
    ) {
        self.images += 1;
        let (a, b) = (assess(reference, thresholds), assess(other, thresholds));
        if a.status() != b.status() {
            self.mismatches
                .push(format!("{name}: {} vs {}", a.status(), b.status()));
            return;
        }
        if let (
            Assessment::Measured {
                measurement: ma, ..
            },
            Assessment::Measured {
                measurement: mb, ..
            },
        ) = (a, b)
        {
            if ma.side != mb.side {
                self.mismatches.push(format!(
                    "{name}: {} side vs {} side",
                    ma.side.as_str(),
                    mb.side.as_str()
                ));
                return;
            }
            self.measured += 1;
            self.max_neck_deg = self.max_neck_deg.max((ma.neck_deg - mb.neck_deg).abs());
            self.max_torso_deg = self.max_torso_deg.max((ma.torso_deg - mb.torso_deg).abs());
        }
    }

    /// Identical labels and every angle within `max_deg`.
    pub fn within(&self, max_deg: f32) -> bool {
        self.mismatches.is_empty() && self.max_neck_deg <= max_deg && self.max_torso_deg <= max_deg
    }

    /// `Ok` when [`Self::within`] `max_deg` and at least `min_measured`
    /// images had angles on both sides; else the summary, for a test failure.
    pub fn check(&self, max_deg: f32, min_measured: usize) -> Result<(), String> {
        if self.within(max_deg) && self.measured >= min_measured {
            Ok(())
        } else {
            Err(format!(
                "{} (wanted angles within {max_deg}° and at least {min_measured} measured)",
                self.summary()
            ))
        }
    }

    /// One line for a report.
    pub fn summary(&self) -> String {
        format!(
            "{} images ({} measured): max |Δneck| {:.3}°, max |Δtorso| {:.3}°, {}",
            self.images,
            self.measured,
            self.max_neck_deg,
            self.max_torso_deg,
            if self.mismatches.is_empty() {
                "labels identical".to_string()
            } else {
                format!("label differences: {}", self.mismatches.join(", "))
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posture_core::posture::{Landmark, landmark};

    /// A side-on pose: left ear/shoulder/hip visible, the neck tilted by
    /// `dx` pixels over 100.
    fn pose(dx: f32) -> Pose {
        let mut lms = vec![
            Landmark {
                x: 0.0,
                y: 0.0,
                z: 0.0,
                visibility: 0.1,
                presence: 1.0,
            };
            landmark::COUNT
        ];
        let mut put = |i: usize, x: f32, y: f32| {
            lms[i] = Landmark {
                x,
                y,
                z: 0.0,
                visibility: 0.9,
                presence: 1.0,
            };
        };
        put(landmark::LEFT_EAR, 100.0 + dx, 100.0);
        put(landmark::LEFT_SHOULDER, 100.0, 200.0);
        put(landmark::LEFT_HIP, 100.0, 400.0);
        Pose {
            landmarks: lms,
            score: 0.9,
        }
    }

    #[test]
    fn equal_runs_agree() {
        let mut a = Agreement::default();
        let t = Thresholds::default();
        a.add("x", Some(&pose(10.0)), Some(&pose(10.0)), &t);
        a.add("nobody", None, None, &t);
        assert_eq!((a.images, a.measured), (2, 1));
        assert!(a.within(0.0), "{}", a.summary());
        assert!(a.summary().contains("labels identical"));
    }

    #[test]
    fn angle_differences_are_measured() {
        let mut a = Agreement::default();
        // atan(10/100) vs atan(11/100): 5.71° vs 6.28°.
        a.add(
            "x",
            Some(&pose(10.0)),
            Some(&pose(11.0)),
            &Thresholds::default(),
        );
        assert!((a.max_neck_deg - 0.567).abs() < 0.01, "{}", a.max_neck_deg);
        assert_eq!(a.max_torso_deg, 0.0);
        assert!(!a.within(MAX_ANGLE_DIFF_DEG));
        assert!(a.within(0.6));
        assert!(a.check(0.6, 1).is_ok());
        assert!(a.check(0.6, 2).unwrap_err().contains("at least 2 measured"));
        assert!(a.check(0.5, 1).is_err());
    }

    #[test]
    fn label_changes_are_mismatches() {
        let t = Thresholds {
            neck_deg: 6.0,
            torso_deg: 10.0,
        };
        let mut a = Agreement::default();
        a.add("x", Some(&pose(10.0)), Some(&pose(11.0)), &t);
        a.add("y", Some(&pose(10.0)), None, &t);
        assert_eq!(a.mismatches.len(), 2, "{:?}", a.mismatches);
        assert!(a.mismatches[0].contains("Good vs Bad"));
        assert!(a.mismatches[1].contains("No person detected"));
        assert!(!a.within(90.0));
    }
}
