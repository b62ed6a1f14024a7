//! Tiny ONNX models built in code, for tests: a minimal writer of the ONNX
//! protobuf messages (ModelProto, GraphProto, NodeProto, TensorProto,
//! ValueInfoProto, AttributeProto) in the protobuf wire format, and ready
//! models such as a per-pixel colour classifier (a 1x1 `Conv`).

/// Opset the built models declare (operators as of ONNX 1.8).
const OPSET: i64 = 13;
/// IR version the built models declare (ONNX 1.8).
const IR_VERSION: i64 = 7;
/// `TensorProto.DataType.FLOAT`.
const FLOAT: i64 = 1;

/// One dimension of a declared input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// An open size with a symbolic name (`height`, `batch`).
    Open(String),
}

/// Fixed dimensions from sizes.
pub fn fixed(dims: &[i64]) -> Vec<Dim> {
    dims.iter().map(|&d| Dim::Fixed(d)).collect()
}

/// A node attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    /// One integer.
    Int(String, i64),
    /// A list of integers.
    Ints(String, Vec<i64>),
    /// One float.
    Float(String, f32),
}

#[derive(Debug, Clone)]
struct Node {
    op: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attributes: Vec<Attribute>,
}

/// A model with one graph of float tensors, written as ONNX bytes by
/// [`ModelBuilder::to_bytes`].
#[derive(Debug, Clone, Default)]
pub struct ModelBuilder {
    inputs: Vec<(String, Vec<Dim>)>,
    outputs: Vec<(String, Vec<Dim>)>,
    initializers: Vec<(String, Vec<i64>, Vec<f32>)>,
    nodes: Vec<Node>,
}

impl ModelBuilder {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a float graph input.
    pub fn input(mut self, name: &str, dims: Vec<Dim>) -> Self {
        self.inputs.push((name.to_owned(), dims));
        self
    }

    /// Declares a float graph output.
    pub fn output(mut self, name: &str, dims: Vec<Dim>) -> Self {
        self.outputs.push((name.to_owned(), dims));
        self
    }

    /// Adds a float constant (weights, biases).
    pub fn initializer(mut self, name: &str, dims: &[i64], values: &[f32]) -> Self {
        self.initializers
            .push((name.to_owned(), dims.to_vec(), values.to_vec()));
        self
    }

    /// Adds an operator node.
    pub fn node(
        mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<Attribute>,
    ) -> Self {
        self.nodes.push(Node {
            op: op.to_owned(),
            inputs: inputs.iter().map(|s| (*s).to_owned()).collect(),
            outputs: outputs.iter().map(|s| (*s).to_owned()).collect(),
            attributes,
        });
        self
    }

    /// The serialised ModelProto.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut graph = Vec::new();
        for n in &self.nodes {
            put_message(&mut graph, 1, &node_proto(n));
        }
        put_bytes(&mut graph, 2, b"clothjob-test");
        for (name, dims, values) in &self.initializers {
            put_message(&mut graph, 5, &tensor_proto(name, dims, values));
        }
        for (name, dims) in &self.inputs {
            put_message(&mut graph, 11, &value_info(name, dims));
        }
        for (name, dims) in &self.outputs {
            put_message(&mut graph, 12, &value_info(name, dims));
        }
        let mut opset = Vec::new();
        put_bytes(&mut opset, 1, b"");
        put_int(&mut opset, 2, OPSET);
        let mut model = Vec::new();
        put_int(&mut model, 1, IR_VERSION);
        put_bytes(&mut model, 2, b"clothjob-onnx testmodel");
        put_message(&mut model, 7, &graph);
        put_message(&mut model, 8, &opset);
        model
    }
}

/// A per-pixel classifier: a 1x1 `Conv` from the 3 input channels to
/// `weights.len()` output channels, `out[k] = weights[k] · rgb + bias[k]`,
/// where rgb is the normalised model input. Input `1x3xHxW` and output
/// `1xNxHxW`, with H and W fixed to `size` (width, height) or left open.
pub fn pixel_classifier(size: Option<(u32, u32)>, weights: &[[f32; 3]], bias: &[f32]) -> Vec<u8> {
    let n = weights.len() as i64;
    let (h, w) = match size {
        Some((w, h)) => (Dim::Fixed(i64::from(h)), Dim::Fixed(i64::from(w))),
        None => (Dim::Open("height".into()), Dim::Open("width".into())),
    };
    let flat: Vec<f32> = weights.iter().flatten().copied().collect();
    ModelBuilder::new()
        .input(
            "image",
            vec![Dim::Fixed(1), Dim::Fixed(3), h.clone(), w.clone()],
        )
        .output("scores", vec![Dim::Fixed(1), Dim::Fixed(n), h, w])
        .initializer("weight", &[n, 3, 1, 1], &flat)
        .initializer("bias", &[n], bias)
        .node(
            "Conv",
            &["image", "weight", "bias"],
            &["scores"],
            vec![Attribute::Ints("kernel_shape".into(), vec![1, 1])],
        )
        .to_bytes()
}

/// Weights and biases of a [`pixel_classifier`] that gives each pixel the
/// class of the nearest of `prototypes` (normalised input values): the
/// score `2 p·x - |p|²` is largest for the nearest `p`.
pub fn nearest_prototype(prototypes: &[[f32; 3]]) -> (Vec<[f32; 3]>, Vec<f32>) {
    let weights = prototypes.iter().map(|p| p.map(|v| 2.0 * v)).collect();
    let bias = prototypes
        .iter()
        .map(|p| -p.iter().map(|v| v * v).sum::<f32>())
        .collect();
    (weights, bias)
}

fn node_proto(n: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    for i in &n.inputs {
        put_bytes(&mut out, 1, i.as_bytes());
    }
    for o in &n.outputs {
        put_bytes(&mut out, 2, o.as_bytes());
    }
    put_bytes(&mut out, 3, format!("{}_0", n.op).as_bytes());
    put_bytes(&mut out, 4, n.op.as_bytes());
    for a in &n.attributes {
        put_message(&mut out, 5, &attribute_proto(a));
    }
    out
}

fn attribute_proto(a: &Attribute) -> Vec<u8> {
    // AttributeType: FLOAT = 1, INT = 2, INTS = 7.
    let mut out = Vec::new();
    match a {
        Attribute::Float(name, v) => {
            put_bytes(&mut out, 1, name.as_bytes());
            put_tag(&mut out, 2, 5);
            out.extend_from_slice(&v.to_le_bytes());
            put_int(&mut out, 20, 1);
        }
        Attribute::Int(name, v) => {
            put_bytes(&mut out, 1, name.as_bytes());
            put_int(&mut out, 3, *v);
            put_int(&mut out, 20, 2);
        }
        Attribute::Ints(name, vs) => {
            put_bytes(&mut out, 1, name.as_bytes());
            for v in vs {
                put_int(&mut out, 8, *v);
            }
            put_int(&mut out, 20, 7);
        }
    }
    out
}

fn tensor_proto(name: &str, dims: &[i64], values: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in dims {
        put_int(&mut out, 1, *d);
    }
    put_int(&mut out, 2, FLOAT);
    put_bytes(&mut out, 8, name.as_bytes());
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    put_bytes(&mut out, 9, &raw);
    out
}

fn value_info(name: &str, dims: &[Dim]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        match d {
            Dim::Fixed(v) => put_int(&mut dim, 1, *v),
            Dim::Open(s) => put_bytes(&mut dim, 2, s.as_bytes()),
        }
        put_message(&mut shape, 1, &dim);
    }
    let mut tensor = Vec::new();
    put_int(&mut tensor, 1, FLOAT);
    put_message(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    put_message(&mut ty, 1, &tensor);
    let mut out = Vec::new();
    put_bytes(&mut out, 1, name.as_bytes());
    put_message(&mut out, 2, &ty);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

/// An int32/int64/enum field (negative values take ten bytes, as protobuf
/// writes them).
fn put_int(out: &mut Vec<u8>, field: u32, v: i64) {
    put_tag(out, field, 0);
    put_varint(out, v as u64);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_message(out: &mut Vec<u8>, field: u32, message: &[u8]) {
    put_bytes(out, field, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_follow_the_wire_format() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let mut out = Vec::new();
        put_int(&mut out, 1, -1);
        assert_eq!(out.len(), 11);
        assert_eq!(out[0], 0x08);
        assert_eq!(out[10], 0x01);
    }

    #[test]
    fn a_model_starts_with_its_ir_version() {
        let bytes = pixel_classifier(Some((4, 4)), &[[1.0, 0.0, 0.0]], &[0.0]);
        assert_eq!(&bytes[..2], &[0x08, IR_VERSION as u8]);
    }
}
