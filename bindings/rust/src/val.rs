//! `Val`: a quiver value as a plain Rust enum, converted to and from the C
//! tree (`qv_value`) in one deep copy each way.
use std::os::raw::c_int;
use std::ptr;

use crate::{check, new_value, sys, Error, Result, Value, ValueRef};

/// A quiver value (`qv_value`), one variant per `QV_TYPE_*`. Every language
/// maps its own values onto these, so equal `Val`s key equal calls everywhere.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// Null: Python's `None`, Lua's `quiver.null`, Go's `nil`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer of CBOR's native range, -2^64 .. 2^64-1.
    Int(i128),
    /// An integer beyond it (CBOR tags 2 and 3): the value is `magnitude`
    /// (big-endian), or `-1 - magnitude` when `negative`.
    BigInt {
        /// Whether the value is `-1 - magnitude`.
        negative: bool,
        /// Big-endian, without leading zeros.
        magnitude: Vec<u8>,
    },
    /// A float (64-bit; stored in the shortest width that keeps it exactly).
    Float(f64),
    /// UTF-8 text.
    Text(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A list (Python lists and tuples alike).
    List(Vec<Val>),
    /// A map, as key/value pairs; quiver orders the keys canonically, and a key
    /// given twice is refused.
    Map(Vec<(Val, Val)>),
    /// A tagged value: the tags quiver gives meaning to for Python types
    /// (docs/FORMAT.md), or any other.
    Tag(u64, Box<Val>),
}

const INT_MIN: i128 = -(1i128 << 64);

impl Val {
    /// The C tree of this value.
    pub fn to_value(&self) -> Result<Value> {
        Ok(match self {
            Val::Null => Value::null()?,
            Val::Bool(b) => Value::bool(*b)?,
            Val::Int(i) if *i >= 0 => {
                let u =
                    u64::try_from(*i).map_err(|_| Error::invalid(format!("{i} is beyond 2^64-1: use Val::BigInt")))?;
                new_value(|out| unsafe { sys::qv_value_new_uint(out, u) })?
            }
            Val::Int(i) if *i >= INT_MIN => {
                let n = (-1 - *i) as u64;
                new_value(|out| unsafe { sys::qv_value_new_negint(out, n) })?
            }
            Val::Int(i) => return Err(Error::invalid(format!("{i} is below -2^64: use Val::BigInt"))),
            Val::BigInt { negative, magnitude } => new_value(|out| unsafe {
                sys::qv_value_new_bigint(out, *negative as c_int, magnitude.as_ptr().cast(), magnitude.len())
            })?,
            Val::Float(d) => Value::float(*d)?,
            Val::Text(s) => Value::text(s)?,
            Val::Bytes(b) => Value::bytes(b)?,
            Val::List(items) => Value::list(items.iter().map(Val::to_value).collect::<Result<Vec<_>>>()?)?,
            Val::Map(entries) => Value::map(
                entries.iter().map(|(k, v)| Ok((k.to_value()?, v.to_value()?))).collect::<Result<Vec<_>>>()?,
            )?,
            Val::Tag(tag, content) => {
                let content = content.to_value()?.into_raw();
                // SAFETY: new_tag takes the content, also when it fails.
                new_value(|out| unsafe { sys::qv_value_new_tag(out, *tag, content) })?
            }
        })
    }

    /// Decode one canonical CBOR item.
    pub fn decode(data: &[u8]) -> Result<Val> {
        Value::decode(data)?.to_val()
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.to_value()?.encode()
    }
}

impl ValueRef<'_> {
    /// The value as a Rust enum (a deep copy).
    pub fn to_val(&self) -> Result<Val> {
        let v = self.raw();
        // SAFETY: v is a valid tree for the borrow; children are borrowed from it.
        unsafe {
            Ok(match sys::qv_value_type(v) {
                sys::QV_TYPE_NULL => Val::Null,
                sys::QV_TYPE_BOOL => Val::Bool(self.as_bool()?),
                sys::QV_TYPE_INT => {
                    let (mut neg, mut n) = (0, 0u64);
                    check(sys::qv_value_get_cbor_int(v, &mut neg, &mut n))?;
                    Val::Int(if neg != 0 { -1 - n as i128 } else { n as i128 })
                }
                sys::QV_TYPE_BIGINT => {
                    let (mut neg, mut m, mut len) = (0, ptr::null(), 0usize);
                    check(sys::qv_value_get_bigint(v, &mut neg, &mut m, &mut len))?;
                    let magnitude = if len == 0 { Vec::new() } else { std::slice::from_raw_parts(m, len).to_vec() };
                    Val::BigInt { negative: neg != 0, magnitude }
                }
                sys::QV_TYPE_FLOAT => Val::Float(self.as_float()?),
                sys::QV_TYPE_TEXT => Val::Text(self.as_text()?.to_owned()),
                sys::QV_TYPE_BYTES => Val::Bytes(self.as_bytes()?.to_vec()),
                sys::QV_TYPE_LIST => {
                    Val::List((0..self.len()).map(|i| self.get(i).expect("in range").to_val()).collect::<Result<_>>()?)
                }
                sys::QV_TYPE_MAP => Val::Map(
                    (0..self.len())
                        .map(|i| {
                            let k = ValueRef::borrow(sys::qv_value_map_key(v, i)).expect("in range");
                            let x = ValueRef::borrow(sys::qv_value_map_value(v, i)).expect("in range");
                            Ok((k.to_val()?, x.to_val()?))
                        })
                        .collect::<Result<_>>()?,
                ),
                sys::QV_TYPE_TAG => {
                    let (mut tag, mut content) = (0u64, ptr::null());
                    check(sys::qv_value_get_tag(v, &mut tag, &mut content))?;
                    let content = ValueRef::borrow(content).ok_or_else(|| Error::invalid("a tag without content"))?;
                    Val::Tag(tag, Box::new(content.to_val()?))
                }
                t => return Err(Error::invalid(format!("a value of unknown type {t}"))),
            })
        }
    }
}
