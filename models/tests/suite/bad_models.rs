//! Model folders that are wrong in every way a user can get them wrong give clear errors.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use duet_models::{run_reference, ModelDir, ModelError};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

const TINY_BERT: &str = r#"{
  "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
  "hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2,
  "num_hidden_layers": 1, "max_position_embeddings": 16, "type_vocab_size": 2,
  "vocab_size": 10, "layer_norm_eps": 1e-12
}"#;

/// Writes a tiny BERT folder with deterministic weights in `dtype`, leaving out `drop` and
/// giving `reshape` a wrong shape.
fn write_model(dir: &Path, dtype: Dtype, drop: Option<&str>, reshape: Option<&str>) {
    write_model_poisoned(dir, dtype, drop, reshape, None);
}

/// [`write_model`] with the first value of tensor `poison.0` set to `poison.1`.
fn write_model_poisoned(
    dir: &Path,
    dtype: Dtype,
    drop: Option<&str>,
    reshape: Option<&str>,
    poison: Option<(&str, f32)>,
) {
    std::fs::write(dir.join("config.json"), TINY_BERT).unwrap();
    let model = ModelDir::open(dir).unwrap();
    let mut data: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (i, (name, mut shape)) in model.graph.weight_shapes().into_iter().enumerate() {
        if Some(name.as_str()) == drop {
            continue;
        }
        if Some(name.as_str()) == reshape {
            shape[0] += 1;
        }
        let n: usize = shape.iter().product();
        let mut vals: Vec<f32> = (0..n)
            .map(|j| ((i * 31 + j * 7) % 17) as f32 / 17.0 - 0.5)
            .collect();
        if let Some((p, v)) = poison {
            if p == name {
                vals[0] = v;
            }
        }
        let bytes: Vec<u8> = match dtype {
            Dtype::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => vals
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            Dtype::BF16 => vals
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            _ => unreachable!(),
        };
        data.insert(name, (shape, bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(k, (s, b))| (k.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

fn run(dir: &Path) -> Result<Vec<f64>, ModelError> {
    let model = ModelDir::open(dir)?;
    let w = model.open_weights()?;
    Ok(run_reference(&model.graph, &w, &[1, 5, 9, 2])?.data)
}

#[test]
fn a_good_tiny_model_runs_in_every_dtype() {
    let mut outs = Vec::new();
    for dt in [Dtype::F32, Dtype::F16, Dtype::BF16] {
        let d = tempfile::tempdir().unwrap();
        write_model(d.path(), dt, None, None);
        let out = run(d.path()).unwrap();
        assert_eq!(out.len(), 4 * 8);
        assert!(out.iter().all(|x| x.is_finite()));
        outs.push(out);
    }
    // the weights are k/17 - 1/2: exact in f16, within 2^-8 relative in bf16
    let max_diff = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    assert!(max_diff(&outs[0], &outs[1]) < 1e-2);
    assert!(max_diff(&outs[0], &outs[2]) < 1e-1);
}

#[test]
fn a_missing_tensor_is_named() {
    let d = tempfile::tempdir().unwrap();
    let name = "encoder.layer.0.intermediate.dense.weight";
    write_model(d.path(), Dtype::F32, Some(name), None);
    match run(d.path()) {
        Err(e @ ModelError::MissingTensor { .. }) => {
            assert!(e.to_string().contains(name) && e.to_string().contains("model.safetensors"))
        }
        other => panic!("expected a missing tensor, got {other:?}"),
    }
}

#[test]
fn a_wrong_shape_is_named() {
    let d = tempfile::tempdir().unwrap();
    let name = "encoder.layer.0.attention.self.key.weight";
    write_model(d.path(), Dtype::F32, None, Some(name));
    match run(d.path()) {
        Err(ModelError::Shape {
            name: n,
            expected,
            got,
            ..
        }) => {
            assert_eq!(n, name);
            assert_eq!(expected, vec![8, 8]);
            assert_eq!(got, vec![9, 8]);
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn an_unknown_architecture_is_refused() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("config.json"),
        r#"{"model_type": "t5", "architectures": ["T5Model"]}"#,
    )
    .unwrap();
    let err = ModelDir::open(d.path()).unwrap_err();
    assert!(
        matches!(err, ModelError::UnknownArchitecture { ref name, .. } if name == "t5"),
        "{err}"
    );
    std::fs::write(d.path().join("config.json"), "{ not json").unwrap();
    assert!(matches!(
        ModelDir::open(d.path()),
        Err(ModelError::Config { .. })
    ));
    std::fs::write(d.path().join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    let err = ModelDir::open(d.path()).unwrap_err();
    assert!(err.to_string().contains("missing field"), "{err}");
}

#[test]
fn a_truncated_or_garbage_weight_file_is_refused() {
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), Dtype::F32, None, None);
    let path = d.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 4, 8, 100, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = run(d.path()).unwrap_err();
        assert!(
            matches!(err, ModelError::Safetensors { .. }),
            "cut {cut}: {err}"
        );
    }
    std::fs::write(&path, vec![0xffu8; 4096]).unwrap();
    assert!(matches!(run(d.path()), Err(ModelError::Safetensors { .. })));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(run(d.path()), Err(ModelError::Io { .. })));
}

#[test]
fn bad_token_ids_are_input_errors() {
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), Dtype::F32, None, None);
    let model = ModelDir::open(d.path()).unwrap();
    let w = model.open_weights().unwrap();
    assert!(matches!(
        run_reference(&model.graph, &w, &[]),
        Err(ModelError::Input(_))
    ));
    assert!(matches!(
        run_reference(&model.graph, &w, &[10]),
        Err(ModelError::Input(_))
    ));
    assert!(matches!(
        run_reference(&model.graph, &w, &[1; 17]),
        Err(ModelError::Input(_))
    ));
}

/// Every tensor is checked against the declared ranges when the model is opened, before any
/// session: a bias of 1e30, an out-of-range LayerNorm shift or token-type embedding, a NaN
/// weight are refused with the tensor's name (on the server; a client never sees it).
#[test]
fn out_of_range_tensors_are_refused_at_open() {
    use duet_models::open::{ModelSpec, ServerModel};
    use duet_protocols::SecureOptions;
    let opts = SecureOptions::default();
    for (name, value) in [
        ("encoder.layer.0.attention.self.query.bias", 1e30f32),
        ("encoder.layer.0.output.LayerNorm.bias", 600.0),
        ("embeddings.token_type_embeddings.weight", 20.0),
        ("encoder.layer.0.intermediate.dense.weight", f32::NAN),
        ("embeddings.LayerNorm.weight", 9.0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_model_poisoned(dir.path(), Dtype::F32, None, None, Some((name, value)));
        let m = ServerModel::open(&ModelSpec::Dir(dir.path().to_path_buf())).unwrap();
        let e = m.check_ranges(&opts).unwrap_err();
        assert!(
            matches!(&e, ModelError::WeightRange { name: n, .. } if n == name),
            "{name}: {e}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), Dtype::F32, None, None);
    let m = ServerModel::open(&ModelSpec::Dir(dir.path().to_path_buf())).unwrap();
    m.check_ranges(&opts).unwrap();
}

/// Dimensions beyond Duet's limits are refused when config.json is read (no allocation, no
/// loop over them).
#[test]
fn huge_dimensions_are_refused() {
    for (field, value) in [
        ("num_hidden_layers", "1000000"),
        ("hidden_size", "1000000000"),
        ("vocab_size", "100000000000"),
        ("max_position_embeddings", "10000000"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let text = TINY_BERT.replace(
            &format!("\"{field}\": "),
            &format!("\"{field}\": {value}, \"was_{field}\": "),
        );
        std::fs::write(dir.path().join("config.json"), text).unwrap();
        let t = std::time::Instant::now();
        let e = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("limit"), "{field}: {e}");
        assert!(t.elapsed().as_secs() < 1);
    }
}
