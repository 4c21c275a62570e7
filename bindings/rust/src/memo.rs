//! `memo`: a memoized Rust closure over Rust types. A call is keyed by its
//! name, its version and its positional arguments as a list, with no keyword
//! arguments: the key Python's `@quiver.memo(name=...)` gives a call whose
//! arguments are all positional, and Lua's and C's give the same call.
use std::marker::PhantomData;
use std::ops::Deref;

use crate::{Digest, Error, Function, Result, Val, Value};

/// A Rust type that becomes a quiver value (an argument or a result).
pub trait ToVal {
    /// The value; integers stay integers and floats stay floats, as in every
    /// other language, so `2` and `2.0` are different calls.
    fn to_val(&self) -> Val;
}

/// A Rust type read back from a quiver value (an argument or a result).
pub trait FromVal: Sized {
    /// The Rust value, or `QV_EINVAL` naming what was found instead.
    fn from_val(v: Val) -> Result<Self>;
}

fn mismatch<T>(want: &str, got: &Val) -> Result<T> {
    Err(Error::invalid(format!("expected {want}, got {got:?}")))
}

impl ToVal for Val {
    fn to_val(&self) -> Val {
        self.clone()
    }
}
impl FromVal for Val {
    fn from_val(v: Val) -> Result<Self> {
        Ok(v)
    }
}

impl ToVal for bool {
    fn to_val(&self) -> Val {
        Val::Bool(*self)
    }
}
impl FromVal for bool {
    fn from_val(v: Val) -> Result<Self> {
        match v {
            Val::Bool(b) => Ok(b),
            other => mismatch("a bool", &other),
        }
    }
}

macro_rules! ints {
    ($($t:ty),*) => {$(
        impl ToVal for $t {
            fn to_val(&self) -> Val {
                Val::Int(*self as i128)
            }
        }
        impl FromVal for $t {
            fn from_val(v: Val) -> Result<Self> {
                match v {
                    Val::Int(i) => <$t>::try_from(i)
                        .map_err(|_| Error::invalid(format!("{i} does not fit {}", stringify!($t)))),
                    other => mismatch(concat!("an integer (", stringify!($t), ")"), &other),
                }
            }
        }
    )*};
}
ints!(i8, i16, i32, i64, u8, u16, u32, u64, isize, usize);

impl ToVal for f64 {
    fn to_val(&self) -> Val {
        Val::Float(*self)
    }
}
impl FromVal for f64 {
    fn from_val(v: Val) -> Result<Self> {
        match v {
            Val::Float(d) => Ok(d),
            other => mismatch("a float", &other),
        }
    }
}
impl ToVal for f32 {
    fn to_val(&self) -> Val {
        Val::Float(*self as f64)
    }
}
impl FromVal for f32 {
    fn from_val(v: Val) -> Result<Self> {
        f64::from_val(v).map(|d| d as f32)
    }
}

impl ToVal for str {
    fn to_val(&self) -> Val {
        Val::Text(self.to_owned())
    }
}
impl ToVal for &str {
    fn to_val(&self) -> Val {
        Val::Text((*self).to_owned())
    }
}
impl ToVal for String {
    fn to_val(&self) -> Val {
        Val::Text(self.clone())
    }
}
impl FromVal for String {
    fn from_val(v: Val) -> Result<Self> {
        match v {
            Val::Text(s) => Ok(s),
            other => mismatch("text", &other),
        }
    }
}

/// Null for `None`.
impl<T: ToVal> ToVal for Option<T> {
    fn to_val(&self) -> Val {
        self.as_ref().map_or(Val::Null, T::to_val)
    }
}
impl<T: FromVal> FromVal for Option<T> {
    fn from_val(v: Val) -> Result<Self> {
        match v {
            Val::Null => Ok(None),
            v => T::from_val(v).map(Some),
        }
    }
}

/// A list (for a byte string, use `Val::Bytes`).
impl<T: ToVal> ToVal for Vec<T> {
    fn to_val(&self) -> Val {
        Val::List(self.iter().map(T::to_val).collect())
    }
}
impl<T: ToVal> ToVal for [T] {
    fn to_val(&self) -> Val {
        Val::List(self.iter().map(T::to_val).collect())
    }
}
impl<T: FromVal> FromVal for Vec<T> {
    fn from_val(v: Val) -> Result<Self> {
        match v {
            Val::List(items) => items.into_iter().map(T::from_val).collect(),
            other => mismatch("a list", &other),
        }
    }
}

/// Null, what a function without a result stores.
impl ToVal for () {
    fn to_val(&self) -> Val {
        Val::Null
    }
}
impl FromVal for () {
    fn from_val(v: Val) -> Result<Self> {
        match v {
            Val::Null => Ok(()),
            other => mismatch("null", &other),
        }
    }
}

/// The positional arguments of a memoized call: a tuple of [`ToVal`] +
/// [`FromVal`] types (up to 8), or a `Vec<Val>` for any number.
pub trait Args: Sized {
    /// The arguments in order.
    fn into_vals(self) -> Vec<Val>;
    /// The arguments back from a stored or passed list.
    fn from_vals(vals: Vec<Val>) -> Result<Self>;
}

impl Args for Vec<Val> {
    fn into_vals(self) -> Vec<Val> {
        self
    }
    fn from_vals(vals: Vec<Val>) -> Result<Self> {
        Ok(vals)
    }
}

macro_rules! tuple_args {
    ($n:literal: $($t:ident $v:ident),*) => {
        impl<$($t: ToVal + FromVal),*> Args for ($($t,)*) {
            fn into_vals(self) -> Vec<Val> {
                let ($($v,)*) = self;
                vec![$($v.to_val()),*]
            }
            #[allow(unused_mut, unused_variables)]
            fn from_vals(vals: Vec<Val>) -> Result<Self> {
                if vals.len() != $n {
                    return Err(Error::invalid(format!("takes {} arguments, got {}", $n, vals.len())));
                }
                let mut it = vals.into_iter();
                Ok(($($t::from_val(it.next().expect("counted"))?,)*))
            }
        }
    };
}
tuple_args!(0:);
tuple_args!(1: A a);
tuple_args!(2: A a, B b);
tuple_args!(3: A a, B b, C c);
tuple_args!(4: A a, B b, C c, D d);
tuple_args!(5: A a, B b, C c, D d, E e);
tuple_args!(6: A a, B b, C c, D d, E e, G g);
tuple_args!(7: A a, B b, C c, D d, E e, G g, H h);
tuple_args!(8: A a, B b, C c, D d, E e, G g, H h, I i);

/// A memoized Rust closure: [`Memo::call`] answers from the calling thread's
/// active cache ([`crate::Cache::activate`]; the default cache, which
/// `QUIVER_CACHE` names, when none), and runs the closure only on a miss.
/// Shared by any number of threads. Derefs to its [`Function`] for `hits()`,
/// `misses()` and the value-level `call`.
pub struct Memo<A, R> {
    func: Function,
    _types: PhantomData<fn(A) -> R>,
}

/// Memoize `f` under `name` and `version` (`None`: no version). Bump the
/// version when the body changes its answers: older entries stop matching.
///
/// ```no_run
/// let area = quiver::memo("geo.area", Some("1"), |(w, h): (f64, f64)| w * h)?;
/// assert_eq!(area.call((2.0, 3.5))?, 7.0);
/// # Ok::<(), quiver::Error>(())
/// ```
pub fn memo<A, R, F>(name: &str, version: Option<&str>, f: F) -> Result<Memo<A, R>>
where
    A: Args + 'static,
    R: ToVal + FromVal + 'static,
    F: Fn(A) -> R + Send + Sync + 'static,
{
    Memo::new(name, version, f)
}

/// [`memo`] for a closure that can fail: an `Err` fails the call with its
/// message (status `QV_EFAILED`), and nothing is stored.
///
/// ```no_run
/// let parse = quiver::try_memo("demo.parse", None, |(s,): (String,)| s.trim().parse::<i64>())?;
/// assert_eq!(parse.call((" 42".into(),))?, 42);
/// assert!(parse.call(("x".into(),)).unwrap_err().message.contains("invalid digit"));
/// # Ok::<(), quiver::Error>(())
/// ```
pub fn try_memo<A, R, E, F>(name: &str, version: Option<&str>, f: F) -> Result<Memo<A, R>>
where
    A: Args + 'static,
    R: ToVal + FromVal + 'static,
    E: std::fmt::Display,
    F: Fn(A) -> std::result::Result<R, E> + Send + Sync + 'static,
{
    Memo::build(name, version, move |a| f(a).map_err(|e| Error::failed(e.to_string())))
}

impl<A: Args + 'static, R: ToVal + FromVal + 'static> Memo<A, R> {
    /// See [`memo`].
    pub fn new<F>(name: &str, version: Option<&str>, f: F) -> Result<Memo<A, R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
    {
        Memo::build(name, version, move |a| Ok(f(a)))
    }

    fn build<F>(name: &str, version: Option<&str>, f: F) -> Result<Memo<A, R>>
    where
        F: Fn(A) -> Result<R> + Send + Sync + 'static,
    {
        let func = Function::new(name, version, move |args, _kwargs| {
            let args = match args.to_val()? {
                Val::List(items) => A::from_vals(items)?,
                other => return Err(Error::invalid(format!("arguments must be a list, got {other:?}"))),
            };
            f(args)?.to_val().to_value()
        })?;
        Ok(Memo { func, _types: PhantomData })
    }

    fn args(args: A) -> Result<Value> {
        Val::List(args.into_vals()).to_value()
    }

    /// The stored result, or the closure's, which is then stored. An argument
    /// or result quiver cannot encode, and a panic in the closure, fail the
    /// call, and nothing is stored.
    pub fn call(&self, args: A) -> Result<R> {
        R::from_val(self.func.call(&Self::args(args)?)?.to_val()?)
    }

    /// The key of a call: what [`crate::Cache::contains`] and
    /// [`crate::Cache::load`] take, equal to the key Python, Lua and C compute.
    pub fn digest(&self, args: A) -> Result<Digest> {
        self.func.digest(&Self::args(args)?)
    }
}

impl<A, R> Deref for Memo<A, R> {
    type Target = Function;
    fn deref(&self) -> &Function {
        &self.func
    }
}
