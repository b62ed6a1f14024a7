//! Helpers of the runner's `process` tests: the T-shirt photo on disk, `report.json` and
//! the files it names.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Cursor;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::tshirt_photo;

/// The 480x640 T-shirt photo written as `dir/tshirt.png`, with its truth mask.
pub fn write_photo(dir: &Path) -> (PathBuf, image::GrayImage) {
    let (photo, truth) = tshirt_photo(480, 640);
    let mut png = Vec::new();
    photo
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let path = dir.join("tshirt.png");
    std::fs::write(&path, png).unwrap();
    (path, truth)
}

/// `dir/out/report.json`.
pub fn report(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("out/report.json")).unwrap()).unwrap()
}

/// The file of the output with `role` in `report`.
pub fn output_file(dir: &Path, report: &Value, role: &str) -> PathBuf {
    let o = report["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["role"] == role)
        .unwrap_or_else(|| panic!("no {role} in {report}"));
    dir.join("out").join(o["file"].as_str().unwrap())
}
