//! The posture analyzer service: MQTT frames to pose, Good/Bad, annotated image, CSV and database row.
