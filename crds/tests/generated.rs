//! The YAML kept under `crds/` is what the Rust types generate, and every
//! CRD has what `kubectl get` needs to be useful.

use std::path::Path;

#[test]
fn committed_yaml_matches_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, crd) in ndc_crds::all() {
        let want = ndc_crds::to_yaml(&crd).expect("render");
        let have = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            have == want,
            "crds/{file} is not what the types generate: run `cargo run -p ndc-crds -- crds/` and commit the result"
        );
    }
}

#[test]
fn every_crd_has_short_names_printer_columns_and_status() {
    for (file, crd) in ndc_crds::all() {
        assert_eq!(crd.spec.group, ndc_crds::GROUP, "{file}");
        let names = &crd.spec.names;
        assert!(
            names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
            "{file}"
        );
        assert_eq!(
            names.categories.as_deref(),
            Some(&["ndc".to_string()][..]),
            "{file}"
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, ndc_crds::VERSION);
        let columns: Vec<&str> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert!(
            columns.contains(&"Ready") && columns.contains(&"Age"),
            "{file}: {columns:?}"
        );
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{file} has no status subresource"
        );
        let schema = serde_json::to_value(&v.schema).expect("schema");
        let status = &schema["openAPIV3Schema"]["properties"]["status"]["properties"];
        assert!(
            status["conditions"].is_object(),
            "{file}: no status.conditions"
        );
        assert!(
            status["observedGeneration"].is_object(),
            "{file}: no status.observedGeneration"
        );
    }
}
