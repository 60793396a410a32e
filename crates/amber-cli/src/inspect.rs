//! `amber inspect`: what a model file holds, from the parsed stream alone
//! (nothing is imported or run).
//!
//! Where `amber_pickle::render_tree` shows the raw value graph (reduce,
//! newobj, build events), this view reads it the way Python would see the
//! result: an object of a class with its attributes (the `BUILD` state),
//! NumPy arrays as dtype and shape (whichever of the protocol-5,
//! protocol 0–4, joblib or amber spellings made them), dtypes and scalars,
//! containers with their sizes. Depth, items per container and the total
//! number of values shown are capped, and a value reached twice (memo
//! sharing, cycles) is shown once and referred to by id afterwards, so any
//! graph renders small.

use std::collections::HashMap;
use std::fmt::Write as _;

use amber_pickle::{EventKind, Graph, Node, NodeId, NodeKind};
use serde_json::{Map, Value, json};

/// Deepest level expanded.
const MAX_DEPTH: usize = 12;
/// Items shown per container.
const MAX_ITEMS: usize = 12;
/// Attributes shown per object.
const MAX_ATTRS: usize = 64;
/// Values shown in total.
const MAX_VALUES: usize = 3_000;
/// Characters of a string shown.
const MAX_TEXT: usize = 60;

/// Walks one graph and builds a JSON description; text is rendered from it.
pub struct Inspector<'g, 'a> {
    graph: &'g Graph<'a>,
    /// The last `BUILD` state of each object.
    builds: HashMap<NodeId, NodeId>,
    /// Items set or appended on non-literal containers (OrderedDict, ...).
    items: HashMap<NodeId, Vec<NodeId>>,
    seen: HashMap<NodeId, ()>,
    budget: usize,
}

impl<'g, 'a> Inspector<'g, 'a> {
    /// An inspector over `graph`.
    pub fn new(graph: &'g Graph<'a>) -> Self {
        let mut builds = HashMap::new();
        let mut items: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for e in graph.events() {
            match &e.kind {
                EventKind::Build { state } => {
                    builds.insert(e.target, *state);
                }
                EventKind::Append { item } => items.entry(e.target).or_default().push(*item),
                EventKind::Extend { items: list } | EventKind::AddItems { items: list } => {
                    items.entry(e.target).or_default().extend(list.iter());
                }
                EventKind::SetItems { pairs } => {
                    let list = items.entry(e.target).or_default();
                    for (k, v) in pairs.iter() {
                        list.push(*k);
                        list.push(*v);
                    }
                }
                _ => {}
            }
        }
        Inspector {
            graph,
            builds,
            items,
            seen: HashMap::new(),
            budget: MAX_VALUES,
        }
    }

    /// The description of the value below `root`.
    pub fn describe(&mut self, root: NodeId) -> Value {
        self.value(root, 0)
    }

    fn node(&self, id: NodeId) -> Option<Node<'g>> {
        self.graph.get(id)
    }

    fn kind(&self, id: NodeId) -> Option<NodeKind<'g>> {
        self.graph.kind(id)
    }

    fn global_name(&self, id: NodeId) -> Option<String> {
        self.node(id).and_then(Node::as_global).map(|g| g.dotted())
    }

    fn tuple(&self, id: NodeId) -> Option<&'g [NodeId]> {
        self.node(id).and_then(Node::as_tuple)
    }

    fn value(&mut self, id: NodeId, depth: usize) -> Value {
        let Some(node) = self.node(id) else {
            return json!({"type": "unknown"});
        };
        if let Some(v) = scalar(node) {
            return v;
        }
        if self.seen.contains_key(&id) {
            return json!({"type": "ref", "id": id.index()});
        }
        if self.budget == 0 || depth >= MAX_DEPTH {
            return json!({"type": "cut"});
        }
        self.budget -= 1;
        self.seen.insert(id, ());
        let mut v = self.composite(id, node, depth);
        if let Some(map) = v.as_object_mut() {
            map.insert("id".into(), id.index().into());
        }
        v
    }

    fn seq(&mut self, items: &[NodeId], depth: usize) -> Value {
        Value::Array(
            items
                .iter()
                .take(MAX_ITEMS)
                .map(|&i| self.value(i, depth + 1))
                .collect(),
        )
    }

    fn pairs(&mut self, pairs: &[(NodeId, NodeId)], depth: usize, max: usize) -> Value {
        let mut map = Map::new();
        for &(k, v) in pairs.iter().take(max) {
            let key = self.key(k);
            let value = self.value(v, depth + 1);
            map.insert(key, value);
        }
        Value::Object(map)
    }

    fn key(&self, id: NodeId) -> String {
        match self.kind(id) {
            Some(NodeKind::Str(s)) => s.to_string(),
            _ => self.node(id).and_then(scalar).map_or_else(
                || format!("<{}>", self.kind(id).map_or("?", NodeKind::name)),
                |v| v.to_string(),
            ),
        }
    }

    fn composite(&mut self, id: NodeId, node: Node<'g>, depth: usize) -> Value {
        match node.kind() {
            NodeKind::Tuple(items) | NodeKind::FrozenSet(items) => {
                json!({"type": node.kind().name(), "len": items.len(), "items": self.seq(items, depth)})
            }
            NodeKind::List(items) | NodeKind::Set(items) => {
                json!({"type": node.kind().name(), "len": items.len(), "items": self.seq(items, depth)})
            }
            NodeKind::Dict(pairs) => {
                json!({"type": "dict", "len": pairs.len(), "items": self.pairs(pairs, depth, MAX_ITEMS)})
            }
            NodeKind::Global(g) => json!({"type": "global", "name": g.dotted()}),
            NodeKind::Reduce { callable, args } => self.call(id, callable, args, depth),
            NodeKind::NewObj { cls, .. } => {
                let class = self.global_name(cls).unwrap_or_else(|| "?".into());
                self.object(id, class, depth)
            }
            NodeKind::InlineData { wrapper, len, .. } => {
                let mut v = self.joblib_array(wrapper);
                if let Some(m) = v.as_object_mut() {
                    m.insert(
                        "storage".into(),
                        format!("joblib inline, {len} bytes").into(),
                    );
                }
                v
            }
            NodeKind::NestedPickle { wrapper, root, .. } => {
                let mut v = self.joblib_array(wrapper);
                let items = self.value(root, depth + 1);
                if let Some(m) = v.as_object_mut() {
                    m.insert("storage".into(), "joblib nested pickle".into());
                    m.insert("value".into(), items);
                }
                v
            }
            NodeKind::Buffer { index } => json!({"type": "buffer", "index": index}),
            NodeKind::ReadOnly { inner } => self.value(inner, depth),
            other => json!({"type": other.name()}),
        }
    }

    /// An instance of `class` with its `BUILD` state as attributes.
    fn object(&mut self, id: NodeId, class: String, depth: usize) -> Value {
        let mut out = Map::new();
        out.insert("type".into(), "object".into());
        out.insert("class".into(), class.into());
        if let Some(&state) = self.builds.get(&id) {
            match self.kind(state) {
                Some(NodeKind::Dict(pairs)) => {
                    out.insert("attrs".into(), self.pairs(pairs, depth, MAX_ATTRS));
                    if pairs.len() > MAX_ATTRS {
                        out.insert("attrs_len".into(), pairs.len().into());
                    }
                }
                _ => {
                    out.insert("state".into(), self.value(state, depth + 1));
                }
            }
        }
        if let Some(list) = self.items.get(&id).cloned() {
            out.insert("len".into(), (list.len() / 2).into());
        }
        Value::Object(out)
    }

    fn call(&mut self, id: NodeId, callable: NodeId, args: NodeId, depth: usize) -> Value {
        let name = self.global_name(callable).unwrap_or_default();
        let short = name.replace("numpy.core.", "numpy._core.");
        let items = self.tuple(args).unwrap_or_default();
        let arg = |i: usize| items.get(i).copied();
        match short.as_str() {
            "numpy._core.numeric._frombuffer" => {
                let mut v = self.array(arg(1), arg(2));
                let storage = match arg(0).and_then(|b| self.kind(b)) {
                    Some(NodeKind::Buffer { index }) => format!("out-of-band buffer {index}"),
                    Some(NodeKind::ReadOnly { .. }) => "out-of-band buffer (read-only)".into(),
                    _ => "in the stream".into(),
                };
                if let Some(m) = v.as_object_mut() {
                    m.insert("storage".into(), storage.into());
                }
                v
            }
            "numpy._core.multiarray._reconstruct" | "numpy.ma.core._mareconstruct" => {
                let class = arg(0).and_then(|c| self.global_name(c)).unwrap_or_default();
                let state = self.builds.get(&id).and_then(|&s| self.tuple(s));
                let field = |i: usize| state.and_then(|s| s.get(i)).copied();
                let mut v = self.array(field(2), field(1));
                if let Some(m) = v.as_object_mut() {
                    if class != "numpy.ndarray" {
                        m.insert("class".into(), class.into());
                    }
                    if let Some(NodeKind::List(items)) = field(4).and_then(|d| self.kind(d)) {
                        let shown = self.seq(items, depth);
                        m.insert("items".into(), shown);
                    }
                }
                v
            }
            "numpy._core.multiarray.scalar" => {
                let dtype = arg(0).map(|d| self.dtype_name(d)).unwrap_or_default();
                let value = arg(1)
                    .and_then(|b| self.node(b))
                    .and_then(Node::as_bytes)
                    .and_then(|b| decode_scalar(&dtype, b));
                json!({"type": "numpy scalar", "dtype": dtype, "value": value})
            }
            "numpy.dtype" => json!({"type": "dtype", "dtype": self.dtype_name(id)}),
            "numpy.random._pickle.__randomstate_ctor" => {
                self.object(id, "numpy.random.RandomState".into(), depth)
            }
            "numpy.random._pickle.__generator_ctor" => {
                let mut v = self.object(id, "numpy.random.Generator".into(), depth);
                if let (Some(m), Some(bg)) = (v.as_object_mut(), arg(0)) {
                    m.insert("bit_generator".into(), self.value(bg, depth + 1));
                }
                v
            }
            "copyreg._reconstructor"
            | "numpy.random._pickle.__bit_generator_ctor"
            | "sklearn.neighbors._kd_tree.newObj"
            | "sklearn.neighbors._ball_tree.newObj"
            | "sklearn.metrics._dist_metrics.newObj" => {
                let class = arg(0).and_then(|c| self.global_name(c)).unwrap_or_default();
                self.object(id, class, depth)
            }
            _ if name.contains(".__pyx_unpickle_") => {
                let class = arg(0).and_then(|c| self.global_name(c)).unwrap_or_default();
                self.object(id, class, depth)
            }
            _ => {
                let mut v = self.object(id, name, depth);
                if let Some(m) = v.as_object_mut() {
                    if !items.is_empty() {
                        m.insert("args".into(), self.seq(items, depth));
                    }
                    if let Some(list) = self.items.get(&id).cloned() {
                        let shown = self.seq(&list, depth);
                        m.insert("items".into(), shown);
                    }
                }
                v
            }
        }
    }

    fn array(&self, dtype: Option<NodeId>, shape: Option<NodeId>) -> Value {
        let dtype = dtype.map(|d| self.dtype_name(d)).unwrap_or_default();
        let shape: Vec<Value> = shape
            .and_then(|s| self.tuple(s))
            .unwrap_or_default()
            .iter()
            .map(|&d| {
                self.node(d)
                    .and_then(Node::as_i64)
                    .map_or(Value::Null, Value::from)
            })
            .collect();
        json!({"type": "ndarray", "dtype": dtype, "shape": shape})
    }

    fn joblib_array(&self, wrapper: NodeId) -> Value {
        let state = self.builds.get(&wrapper).and_then(|&s| self.kind(s));
        let mut dtype = None;
        let mut shape = None;
        if let Some(NodeKind::Dict(pairs)) = state {
            for &(k, v) in pairs {
                match self.kind(k) {
                    Some(NodeKind::Str("dtype")) => dtype = Some(v),
                    Some(NodeKind::Str("shape")) => shape = Some(v),
                    _ => {}
                }
            }
        }
        self.array(dtype, shape)
    }

    /// `float64`, `<U5`, `structured [a, b]`, ... from a `numpy.dtype` node.
    fn dtype_name(&self, id: NodeId) -> String {
        let Some(NodeKind::Reduce { args, .. }) = self.kind(id) else {
            return self.global_name(id).unwrap_or_else(|| "?".into());
        };
        let code = self
            .tuple(args)
            .and_then(|a| a.first())
            .and_then(|&c| self.node(c))
            .and_then(Node::as_str)
            .unwrap_or("?");
        let state = self.builds.get(&id).and_then(|&s| self.tuple(s));
        let names: Vec<String> = state
            .and_then(|s| s.get(3))
            .and_then(|&n| self.tuple(n))
            .unwrap_or_default()
            .iter()
            .filter_map(|&n| self.node(n).and_then(Node::as_str).map(str::to_owned))
            .collect();
        if !names.is_empty() {
            return format!("structured [{}]", names.join(", "));
        }
        dtype_label(code)
    }
}

fn dtype_label(code: &str) -> String {
    let digits = code
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(code.len());
    let (kind, size) = code.split_at(digits);
    let bits = size.parse::<u32>().map(|b| b * 8).unwrap_or(0);
    match kind {
        "f" => format!("float{bits}"),
        "i" => format!("int{bits}"),
        "u" => format!("uint{bits}"),
        "c" => format!("complex{bits}"),
        "b" => "bool".into(),
        "O" => "object".into(),
        "M" => "datetime64".into(),
        "m" => "timedelta64".into(),
        "U" => format!("<U{size}"),
        "S" => format!("|S{size}"),
        _ => code.to_owned(),
    }
}

fn decode_scalar(dtype: &str, b: &[u8]) -> Option<Value> {
    Some(match (dtype, b.len()) {
        ("float64", 8) => json!(f64::from_le_bytes(b.try_into().ok()?)),
        ("float32", 4) => json!(f32::from_le_bytes(b.try_into().ok()?)),
        ("int64", 8) => json!(i64::from_le_bytes(b.try_into().ok()?)),
        ("int32", 4) => json!(i32::from_le_bytes(b.try_into().ok()?)),
        ("bool", 1) => json!(b.first() != Some(&0)),
        _ => return None,
    })
}

/// Plain values as JSON; `None` for composites.
fn scalar(node: Node<'_>) -> Option<Value> {
    Some(match node.kind() {
        NodeKind::None => Value::Null,
        NodeKind::Bool(b) => json!(b),
        NodeKind::Int(v) => json!(v),
        NodeKind::BigInt(b) => json!({"type": "int", "bytes": b.len()}),
        NodeKind::Float(v) => json!(v),
        NodeKind::Str(s) => {
            let shown: String = s.chars().take(MAX_TEXT).collect();
            if shown.len() < s.len() {
                json!(format!("{shown}..."))
            } else {
                json!(shown)
            }
        }
        NodeKind::Bytes(b) | NodeKind::ByteArray(b) | NodeKind::LegacyStr(b) => {
            json!({"type": node.kind().name(), "len": b.len()})
        }
        _ => return None,
    })
}

/// The text view of [`Inspector::describe`]'s output.
pub fn text(value: &Value) -> String {
    let mut out = String::new();
    line(&mut out, "", value, 0);
    out
}

fn line(out: &mut String, label: &str, v: &Value, depth: usize) {
    let pad = "  ".repeat(depth);
    let get = |k: &str| v.get(k);
    let s = |k: &str| get(k).and_then(Value::as_str).unwrap_or("");
    let ty = s("type");
    let id = get("id").and_then(Value::as_u64);
    let tag = id.map_or_else(String::new, |i| format!("  #{i}"));
    match ty {
        "" if v.is_array() => {
            let n = v.as_array().map_or(0, Vec::len);
            let _ = writeln!(out, "{pad}{label}({n} values)");
            children(out, Some(v), depth + 1);
        }
        "" => {
            let _ = writeln!(out, "{pad}{label}{v}");
        }
        "object" => {
            let class = s("class");
            let (module, short) = class.rsplit_once('.').unwrap_or(("", class));
            let _ = writeln!(out, "{pad}{label}{short} ({module}){tag}");
            for key in ["args", "state", "bit_generator"] {
                if let Some(x) = get(key) {
                    line(out, &format!("{key}: "), x, depth + 1);
                }
            }
            children(out, get("attrs"), depth + 1);
            if let Some(n) = get("attrs_len") {
                let _ = writeln!(out, "{pad}  ... {n} attributes in all");
            }
            children(out, get("items"), depth + 1);
        }
        "ndarray" => {
            let shape: Vec<String> = get("shape")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(Value::to_string).collect())
                .unwrap_or_default();
            let shape = if shape.len() == 1 {
                format!("({},)", shape.join(""))
            } else {
                format!("({})", shape.join(", "))
            };
            let class = get("class")
                .and_then(Value::as_str)
                .map_or_else(String::new, |c| format!(" {c}"));
            let storage = get("storage")
                .and_then(Value::as_str)
                .map_or_else(String::new, |c| format!(", {c}"));
            let _ = writeln!(
                out,
                "{pad}{label}ndarray{class} {} {shape}{storage}{tag}",
                s("dtype")
            );
            children(out, get("items"), depth + 1);
            if let Some(x) = get("value") {
                line(out, "value: ", x, depth + 1);
            }
        }
        "dtype" => {
            let _ = writeln!(out, "{pad}{label}dtype({})", s("dtype"));
        }
        "numpy scalar" => {
            let value = get("value")
                .filter(|x| !x.is_null())
                .map_or_else(String::new, |x| format!(" {x}"));
            let _ = writeln!(out, "{pad}{label}numpy.{}{value}", s("dtype"));
        }
        "global" => {
            let _ = writeln!(out, "{pad}{label}{}", s("name"));
        }
        "ref" => {
            let _ = writeln!(
                out,
                "{pad}{label}-> #{} (shown above)",
                get("id").unwrap_or(&Value::Null)
            );
        }
        "cut" => {
            let _ = writeln!(out, "{pad}{label}...");
        }
        "list" | "tuple" | "set" | "frozenset" | "dict" => {
            let n = get("len").and_then(Value::as_u64).unwrap_or(0);
            let _ = writeln!(out, "{pad}{label}{ty} ({n} items){tag}");
            children(out, get("items"), depth + 1);
            if n > MAX_ITEMS as u64 {
                let _ = writeln!(out, "{pad}  ... {} more", n - MAX_ITEMS as u64);
            }
        }
        "buffer" => {
            let _ = writeln!(
                out,
                "{pad}{label}out-of-band buffer {}",
                get("index").unwrap_or(&Value::Null)
            );
        }
        other => {
            let len = get("len").map_or_else(String::new, |n| format!(" ({n} bytes)"));
            let _ = writeln!(out, "{pad}{label}{other}{len}");
        }
    }
}

fn children(out: &mut String, items: Option<&Value>, depth: usize) {
    match items {
        Some(Value::Object(map)) => {
            for (k, x) in map {
                line(out, &format!("{k}: "), x, depth);
            }
        }
        Some(Value::Array(list)) => {
            for (i, x) in list.iter().enumerate() {
                line(out, &format!("[{i}] "), x, depth);
            }
        }
        _ => {}
    }
}

fn open_failed(e: &crate::source::OpenError) -> crate::Outcome {
    eprintln!("error: {}", e.message);
    if e.invalid {
        crate::Outcome::Invalid
    } else {
        crate::Outcome::Error
    }
}

/// `amber inspect FILE [--json]`.
pub fn run(path: &std::path::Path, as_json: bool) -> crate::Outcome {
    use amber_pickle::{Parser, joblib::JoblibHook};

    let opened = match crate::source::open(path) {
        Ok(o) => o,
        Err(e) => return open_failed(&e),
    };
    let format = opened.format();
    let view = match opened.stream() {
        Ok(v) => v,
        Err(e) => return open_failed(&crate::source::OpenError::new(path, &e)),
    };
    let (stream, kind) = (view.stream, view.kind);
    let mut hook = JoblibHook::new();
    let mut parser = Parser::new(&stream).allow_trailing(true);
    match kind {
        amber_scan::StreamKind::Amber { buffers } => parser = parser.out_of_band_buffers(buffers),
        amber_scan::StreamKind::Joblib => parser = parser.hook(&mut hook),
        amber_scan::StreamKind::Pickle => {}
    }
    let pickle = match parser.parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}: not a valid pickle stream: {e}", path.display());
            return crate::Outcome::Invalid;
        }
    };
    let tree = Inspector::new(pickle.graph()).describe(pickle.root());
    if as_json {
        let value = json!({
            "file": path,
            "format": format,
            "protocol": pickle.highest_protocol(),
            "stream_len": stream.len(),
            "root": tree,
        });
        println!("{value}");
    } else {
        let protocol = pickle
            .highest_protocol()
            .map_or_else(|| "no PROTO".to_owned(), |p| format!("protocol {p}"));
        println!(
            "{} ({format}, {protocol}, {} stream bytes, {} globals)",
            path.display(),
            stream.len(),
            pickle.globals().len()
        );
        print!("{}", text(&tree));
    }
    crate::Outcome::Ok
}
