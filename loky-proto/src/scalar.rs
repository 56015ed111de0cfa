//! Numbers (and strings, and sequences of them) encoded and decoded by
//! hand: the values a `map` carries by the million.
//!
//! `rmp_serde` spends about 70 instructions to encode an `i64` and about 65
//! to decode one from an array (its markers matched one by one, its
//! errors carried through every write); a `map` of small numbers pays that
//! for every item on both sides of the channel. The two paths here write
//! and read exactly what `rmp_serde` does, faster:
//!
//! - [`encode`] hands a value to a serializer that writes booleans and
//!   numbers itself and gives everything else (strings, structs,
//!   sequences...) to `rmp_serde`'s serializer, method for method: the
//!   bytes are those of [`rmp_serde::encode::write_named`] for every value.
//! - [`decode`] reads booleans, numbers, strings, `()`, and sequences,
//!   tuples, options and newtypes of them from a slice, and gives up on
//!   anything else (a map, which is how structs and enums travel, a value
//!   whose type asks for `deserialize_any`, bytes that `rmp_serde` would
//!   refuse): the caller then decodes the whole value with `rmp_serde`,
//!   whose value or error is the one that counts. A value is decoded by
//!   hand only when `rmp_serde` would decode it to the same value. What
//!   was read before giving up is read again: a value gives up at its
//!   first map (a struct's first field), so only a value holding numbers
//!   or strings *before* a struct pays for them twice.

use std::fmt;
use std::io::Write;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};
use serde::ser::{self, Serialize};

type Rmp<W> =
    rmp_serde::Serializer<W, rmp_serde::config::StructMapConfig<rmp_serde::config::DefaultConfig>>;
type EncodeError = rmp_serde::encode::Error;

/// Appends the MessagePack encoding of `value` to `out`, with field names:
/// the bytes [`rmp_serde::encode::write_named`] writes.
#[inline]
pub(crate) fn encode<T, W>(value: &T, out: &mut W) -> Result<(), EncodeError>
where
    T: Serialize + ?Sized,
    W: Write + ?Sized,
{
    let mut rmp = rmp_serde::Serializer::new(out).with_struct_map();
    value.serialize(Scalars(&mut rmp))
}

/// Decodes a value of `bytes` if it is a boolean, a number, a string,
/// `()`, or a sequence, tuple, option or newtype of them (nested as deep
/// as [`MAX_DEPTH`]); `None` for anything else, to be decoded by
/// `rmp_serde`. Bytes after the value are ignored, as
/// `rmp_serde::from_slice` ignores them.
#[inline]
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    T::deserialize(&mut Reader { bytes, depth: 0 }).ok()
}

/// Nested sequences deeper than this are left to `rmp_serde`.
const MAX_DEPTH: u32 = 32;

/// Writes `bytes`, one value's encoding: of a length known where it is
/// called, so that the copy is a store or two rather than a call of
/// `memcpy`.
#[inline]
fn put<W: Write + ?Sized, const N: usize>(
    rmp: &mut Rmp<&mut W>,
    bytes: [u8; N],
) -> Result<(), EncodeError> {
    rmp.get_mut().write_all(&bytes).map_err(|err| {
        EncodeError::InvalidValueWrite(rmp::encode::ValueWriteError::InvalidDataWrite(err))
    })
}

/// `marker` followed by `data`.
#[inline]
fn marked<const N: usize, const M: usize>(marker: u8, data: [u8; N]) -> [u8; M] {
    debug_assert_eq!(M, N + 1);
    let mut out = [marker; M];
    out[1..].copy_from_slice(&data);
    out
}

/// Writes an unsigned integer as `rmp::encode::write_uint` writes it: the
/// shortest of a positive fixint, `uint 8`, 16, 32 or 64.
#[inline]
fn uint<W: Write + ?Sized>(rmp: &mut Rmp<&mut W>, v: u64) -> Result<(), EncodeError> {
    if v < 128 {
        put(rmp, [v as u8])
    } else if v < 1 << 8 {
        put(rmp, [0xcc, v as u8])
    } else if v < 1 << 16 {
        put(rmp, marked::<2, 3>(0xcd, (v as u16).to_be_bytes()))
    } else if v < 1 << 32 {
        put(rmp, marked::<4, 5>(0xce, (v as u32).to_be_bytes()))
    } else {
        put(rmp, marked::<8, 9>(0xcf, v.to_be_bytes()))
    }
}

/// Writes a signed integer as `rmp::encode::write_sint` writes it: a
/// non-negative one as unsigned, a negative one as the shortest of a
/// negative fixint, `int 8`, 16, 32 or 64.
#[inline]
fn sint<W: Write + ?Sized>(rmp: &mut Rmp<&mut W>, v: i64) -> Result<(), EncodeError> {
    if v >= 0 {
        uint(rmp, v as u64)
    } else if v >= -32 {
        put(rmp, [v as u8])
    } else if v >= i64::from(i8::MIN) {
        put(rmp, [0xd0, v as u8])
    } else if v >= i64::from(i16::MIN) {
        put(rmp, marked::<2, 3>(0xd1, (v as i16).to_be_bytes()))
    } else if v >= i64::from(i32::MIN) {
        put(rmp, marked::<4, 5>(0xd2, (v as i32).to_be_bytes()))
    } else {
        put(rmp, marked::<8, 9>(0xd3, v.to_be_bytes()))
    }
}

/// A serializer that writes booleans and numbers itself and passes
/// everything else to `rmp_serde`'s.
struct Scalars<'a, 'w, W: Write + ?Sized>(&'a mut Rmp<&'w mut W>);

/// `rmp_serde`'s serializer, as `Scalars` passes values to it.
type Inner<'a, 'w, W> = &'a mut Rmp<&'w mut W>;

impl<'a, 'w, W: Write + ?Sized> ser::Serializer for Scalars<'a, 'w, W> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = <Inner<'a, 'w, W> as ser::Serializer>::SerializeSeq;
    type SerializeTuple = <Inner<'a, 'w, W> as ser::Serializer>::SerializeTuple;
    type SerializeTupleStruct = <Inner<'a, 'w, W> as ser::Serializer>::SerializeTupleStruct;
    type SerializeTupleVariant = <Inner<'a, 'w, W> as ser::Serializer>::SerializeTupleVariant;
    type SerializeMap = <Inner<'a, 'w, W> as ser::Serializer>::SerializeMap;
    type SerializeStruct = <Inner<'a, 'w, W> as ser::Serializer>::SerializeStruct;
    type SerializeStructVariant = <Inner<'a, 'w, W> as ser::Serializer>::SerializeStructVariant;

    /// As `rmp_serde`'s serializer of this configuration: compact forms
    /// (an address as its bytes, not as text).
    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        put(self.0, [if v { 0xc3 } else { 0xc2 }])
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        sint(self.0, v.into())
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        sint(self.0, v.into())
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        sint(self.0, v.into())
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        sint(self.0, v)
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        uint(self.0, v.into())
    }
    #[inline]
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        uint(self.0, v.into())
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        uint(self.0, v.into())
    }
    #[inline]
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        uint(self.0, v)
    }
    #[inline]
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        put(self.0, marked::<4, 5>(0xca, v.to_bits().to_be_bytes()))
    }
    #[inline]
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        put(self.0, marked::<8, 9>(0xcb, v.to_bits().to_be_bytes()))
    }

    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        self.0.serialize_i128(v)
    }
    fn serialize_u128(self, v: u128) -> Result<(), EncodeError> {
        self.0.serialize_u128(v)
    }
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        self.0.serialize_char(v)
    }
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        self.0.serialize_str(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        self.0.serialize_bytes(v)
    }
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.0.serialize_none()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        self.0.serialize_some(value)
    }
    fn serialize_unit(self) -> Result<(), EncodeError> {
        self.0.serialize_unit()
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<(), EncodeError> {
        self.0.serialize_unit_struct(name)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        self.0.serialize_unit_variant(name, index, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.0.serialize_newtype_struct(name, value)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.0
            .serialize_newtype_variant(name, index, variant, value)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, EncodeError> {
        self.0.serialize_seq(len)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, EncodeError> {
        self.0.serialize_tuple(len)
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, EncodeError> {
        self.0.serialize_tuple_struct(name, len)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        self.0.serialize_tuple_variant(name, index, variant, len)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
        self.0.serialize_map(len)
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, EncodeError> {
        self.0.serialize_struct(name, len)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        self.0.serialize_struct_variant(name, index, variant, len)
    }
    fn collect_seq<I>(self, iter: I) -> Result<(), EncodeError>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        self.0.collect_seq(iter)
    }
    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        self.0.collect_str(value)
    }
}

/// Decoding gave up: the value is `rmp_serde`'s to decode.
#[derive(Debug)]
struct GiveUp;

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a number or a sequence of numbers")
    }
}

impl std::error::Error for GiveUp {}

impl de::Error for GiveUp {
    #[cold]
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        GiveUp
    }
}

/// Reads the values [`decode`] takes from the front of a slice.
struct Reader<'de> {
    bytes: &'de [u8],
    depth: u32,
}

impl<'de> Reader<'de> {
    #[inline]
    fn take<const N: usize>(&mut self) -> Result<[u8; N], GiveUp> {
        let (head, rest) = self.bytes.split_first_chunk::<N>().ok_or(GiveUp)?;
        self.bytes = rest;
        Ok(*head)
    }

    /// A boolean or a number, visited as `rmp_serde` visits it (by the type
    /// its marker names).
    #[inline]
    fn scalar<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, GiveUp> {
        let [marker] = self.take()?;
        match marker {
            0x00..=0x7f => visitor.visit_u8(marker),
            0xe0..=0xff => visitor.visit_i8(marker as i8),
            0xcc => visitor.visit_u8(u8::from_be_bytes(self.take()?)),
            0xcd => visitor.visit_u16(u16::from_be_bytes(self.take()?)),
            0xce => visitor.visit_u32(u32::from_be_bytes(self.take()?)),
            0xcf => visitor.visit_u64(u64::from_be_bytes(self.take()?)),
            0xd0 => visitor.visit_i8(i8::from_be_bytes(self.take()?)),
            0xd1 => visitor.visit_i16(i16::from_be_bytes(self.take()?)),
            0xd2 => visitor.visit_i32(i32::from_be_bytes(self.take()?)),
            0xd3 => visitor.visit_i64(i64::from_be_bytes(self.take()?)),
            0xca => visitor.visit_f32(f32::from_bits(u32::from_be_bytes(self.take()?))),
            0xcb => visitor.visit_f64(f64::from_bits(u64::from_be_bytes(self.take()?))),
            0xc2 => visitor.visit_bool(false),
            0xc3 => visitor.visit_bool(true),
            _ => Err(GiveUp),
        }
    }

    /// A string of valid UTF-8, visited as borrowed (as `rmp_serde` visits a
    /// string read from a slice); anything else, invalid UTF-8 included, is
    /// `rmp_serde`'s.
    #[inline]
    fn text<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, GiveUp> {
        let [marker] = self.take()?;
        let len = match marker {
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xd9 => usize::from(u8::from_be_bytes(self.take()?)),
            0xda => usize::from(u16::from_be_bytes(self.take()?)),
            0xdb => usize::try_from(u32::from_be_bytes(self.take()?)).map_err(|_| GiveUp)?,
            _ => return Err(GiveUp),
        };
        let (text, rest) = self.bytes.split_at_checked(len).ok_or(GiveUp)?;
        let text = std::str::from_utf8(text).map_err(|_| GiveUp)?;
        self.bytes = rest;
        visitor.visit_borrowed_str(text)
    }

    /// An array, visited as a sequence of its elements; every element must
    /// be read, as `rmp_serde` requires.
    #[inline]
    fn array<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, GiveUp> {
        let [marker] = self.take()?;
        let len = match marker {
            0x90..=0x9f => u32::from(marker & 0x0f),
            0xdc => u32::from(u16::from_be_bytes(self.take()?)),
            0xdd => u32::from_be_bytes(self.take()?),
            _ => return Err(GiveUp),
        };
        if self.depth >= MAX_DEPTH {
            return Err(GiveUp);
        }
        self.depth += 1;
        let mut elements = Elements {
            reader: self,
            left: len,
        };
        let value = visitor.visit_seq(&mut elements)?;
        if elements.left != 0 {
            return Err(GiveUp);
        }
        self.depth -= 1;
        Ok(value)
    }
}

struct Elements<'a, 'de> {
    reader: &'a mut Reader<'de>,
    left: u32,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = GiveUp;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, GiveUp> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.reader).map(Some)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        usize::try_from(self.left).ok()
    }
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = GiveUp;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, GiveUp> {
        Err(GiveUp)
    }

    #[inline]
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.scalar(visitor)
    }
    #[inline]
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.scalar(visitor)
    }
    #[inline]
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.scalar(visitor)
    }
    #[inline]
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.scalar(visitor)
    }
    #[inline]
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.scalar(visitor)
    }
    #[inline]
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.scalar(visitor)
    }
    #[inline]
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.scalar(visitor)
    }
    #[inline]
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.scalar(visitor)
    }
    #[inline]
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.scalar(visitor)
    }
    #[inline]
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.scalar(visitor)
    }
    #[inline]
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.scalar(visitor)
    }
    #[inline]
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.array(visitor)
    }
    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, GiveUp> {
        self.array(visitor)
    }

    /// `nil` is `None`; anything else is the value of a `Some`, read from
    /// the same marker (as `rmp_serde` reads it).
    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        match self.bytes.split_first() {
            Some((0xc0, rest)) => {
                self.bytes = rest;
                visitor.visit_none()
            }
            Some(_) => visitor.visit_some(self),
            None => Err(GiveUp),
        }
    }
    #[inline]
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        match self.take()? {
            [0xc0] => visitor.visit_unit(),
            _ => Err(GiveUp),
        }
    }
    /// A newtype is its field, but for `rmp_serde`'s extension type.
    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, GiveUp> {
        if name == rmp_serde::MSGPACK_EXT_STRUCT_NAME {
            return Err(GiveUp);
        }
        visitor.visit_newtype_struct(self)
    }

    #[inline]
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.text(visitor)
    }
    #[inline]
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.text(visitor)
    }
    #[inline]
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GiveUp> {
        self.text(visitor)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 bytes byte_buf unit_struct
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::net::IpAddr;

    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;

    fn rmp_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        rmp_serde::encode::write_named(&mut out, value).unwrap();
        out
    }

    fn our_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out).unwrap();
        out
    }

    /// `bytes` decode by hand to what `rmp_serde` decodes them to, or by
    /// hand not at all; true if they decoded by hand.
    fn decodes_alike<T: DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) -> bool {
        let theirs = rmp_serde::from_slice::<T>(bytes);
        match decode::<T>(bytes) {
            Some(ours) => {
                assert_eq!(Some(&ours), theirs.as_ref().ok(), "bytes {bytes:02x?}");
                true
            }
            None => false,
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        y: Option<f64>,
        tags: Vec<String>,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Dot,
        Circle(u16),
        Pair(i8, i8),
        Box { w: u64, h: u64 },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Meters(f32);

    /// A MessagePack extension value, as `rmp_serde` writes one.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename = "_ExtStruct")]
    struct Ext((i8, serde_bytes::ByteBuf));

    fn shapes() -> impl Strategy<Value = Shape> {
        prop_oneof![
            Just(Shape::Dot),
            any::<u16>().prop_map(Shape::Circle),
            (any::<i8>(), any::<i8>()).prop_map(|(a, b)| Shape::Pair(a, b)),
            (any::<u64>(), any::<u64>()).prop_map(|(w, h)| Shape::Box { w, h }),
        ]
    }

    /// Integers near every boundary of MessagePack's encodings.
    fn edgy_i64() -> impl Strategy<Value = i64> {
        let edges = [
            0,
            127,
            128,
            255,
            256,
            65535,
            65536,
            u32::MAX as i64,
            u32::MAX as i64 + 1,
            i64::MAX,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            i32::MIN as i64,
            i32::MIN as i64 - 1,
            i64::MIN,
        ];
        prop_oneof![
            proptest::sample::select(edges.to_vec()),
            (proptest::sample::select(edges.to_vec()), -2i64..=2)
                .prop_map(|(e, d)| e.saturating_add(d)),
            any::<i64>(),
        ]
    }

    proptest! {
        #[test]
        fn numbers_encode_as_rmp_serde_encodes_them(
            i in edgy_i64(),
            u in any::<u64>(),
            f in any::<f64>(),
            g in any::<f32>(),
            b in any::<bool>(),
        ) {
            prop_assert_eq!(our_bytes(&i), rmp_bytes(&i));
            prop_assert_eq!(our_bytes(&(i as i32)), rmp_bytes(&(i as i32)));
            prop_assert_eq!(our_bytes(&(i as i16)), rmp_bytes(&(i as i16)));
            prop_assert_eq!(our_bytes(&(i as i8)), rmp_bytes(&(i as i8)));
            prop_assert_eq!(our_bytes(&(i as u64)), rmp_bytes(&(i as u64)));
            prop_assert_eq!(our_bytes(&u), rmp_bytes(&u));
            prop_assert_eq!(our_bytes(&(u as u32)), rmp_bytes(&(u as u32)));
            prop_assert_eq!(our_bytes(&(u as u16)), rmp_bytes(&(u as u16)));
            prop_assert_eq!(our_bytes(&(u as u8)), rmp_bytes(&(u as u8)));
            prop_assert_eq!(our_bytes(&f), rmp_bytes(&f));
            prop_assert_eq!(our_bytes(&g), rmp_bytes(&g));
            prop_assert_eq!(our_bytes(&b), rmp_bytes(&b));
        }

        #[test]
        fn every_other_value_encodes_as_rmp_serde_encodes_it(
            point in (any::<i32>(), any::<Option<f64>>(), proptest::collection::vec(".{0,40}", 0..4))
                .prop_map(|(x, y, tags)| Point { x, y, tags }),
            shape in shapes(),
            list in proptest::collection::vec(edgy_i64(), 0..40),
            text in ".{0,300}",
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            pairs in proptest::collection::btree_map(".{0,8}", any::<Option<u8>>(), 0..5),
            ip in any::<IpAddr>(),
            wide in any::<i128>(),
            c in any::<char>(),
        ) {
            prop_assert_eq!(our_bytes(&point), rmp_bytes(&point));
            prop_assert_eq!(our_bytes(&shape), rmp_bytes(&shape));
            prop_assert_eq!(our_bytes(&list), rmp_bytes(&list));
            prop_assert_eq!(our_bytes(&(list.clone(), text.clone())), rmp_bytes(&(list.clone(), text.clone())));
            prop_assert_eq!(our_bytes(&text), rmp_bytes(&text));
            prop_assert_eq!(our_bytes(text.as_str()), rmp_bytes(text.as_str()));
            prop_assert_eq!(our_bytes(&serde_bytes::ByteBuf::from(bytes.clone())), rmp_bytes(&serde_bytes::ByteBuf::from(bytes)));
            prop_assert_eq!(our_bytes(&pairs), rmp_bytes(&pairs));
            prop_assert_eq!(our_bytes(&ip), rmp_bytes(&ip));
            prop_assert_eq!(our_bytes(&wide), rmp_bytes(&wide));
            prop_assert_eq!(our_bytes(&c), rmp_bytes(&c));
            prop_assert_eq!(our_bytes(&Meters(1.5)), rmp_bytes(&Meters(1.5)));
            prop_assert_eq!(our_bytes(&()), rmp_bytes(&()));
            prop_assert_eq!(our_bytes(&Some(3u8)), rmp_bytes(&Some(3u8)));
        }

        #[test]
        fn numbers_and_their_sequences_decode_by_hand_as_rmp_serde_decodes_them(
            i in edgy_i64(),
            f in any::<f64>().prop_filter("NaN is not equal to itself", |f| !f.is_nan()),
            list in proptest::collection::vec(edgy_i64(), 0..300),
            pairs in proptest::collection::vec((any::<u8>(), any::<bool>()), 0..20),
            text in ".{0,300}",
            c in any::<char>(),
        ) {
            let bytes = rmp_bytes(&i);
            prop_assert!(decodes_alike::<i64>(&bytes));
            // A value that does not fit the type leaves it to `rmp_serde`
            // (and its error).
            let fits = |fits: bool, by_hand: bool| fits == by_hand;
            prop_assert!(fits(i32::try_from(i).is_ok(), decodes_alike::<i32>(&bytes)));
            prop_assert!(fits(i16::try_from(i).is_ok(), decodes_alike::<i16>(&bytes)));
            prop_assert!(fits(u8::try_from(i).is_ok(), decodes_alike::<u8>(&bytes)));
            prop_assert!(fits(u64::try_from(i).is_ok(), decodes_alike::<u64>(&bytes)));
            prop_assert!(decodes_alike::<f64>(&bytes));
            prop_assert!(decodes_alike::<f64>(&rmp_bytes(&f)));
            prop_assert!(decodes_alike::<f32>(&rmp_bytes(&(f as f32))));
            prop_assert!(decodes_alike::<Vec<i64>>(&rmp_bytes(&list)));
            prop_assert!(decodes_alike::<Vec<(u8, bool)>>(&rmp_bytes(&pairs)));
            prop_assert!(decodes_alike::<(i64, f64)>(&rmp_bytes(&(i, f))));
            prop_assert!(decodes_alike::<Vec<Vec<i64>>>(&rmp_bytes(&vec![list.clone(), vec![i]])));
            prop_assert!(decodes_alike::<String>(&rmp_bytes(&text)));
            prop_assert!(decodes_alike::<char>(&rmp_bytes(&c)));
            prop_assert!(decodes_alike::<(Vec<i64>, String)>(&rmp_bytes(&(list.clone(), text.clone()))));
            prop_assert!(decodes_alike::<Vec<Option<String>>>(&rmp_bytes(&[Some(text.clone()), None])));
        }

        #[test]
        fn any_bytes_decode_by_hand_as_rmp_serde_decodes_them_or_not_at_all(
            bytes in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            decodes_alike::<i64>(&bytes);
            decodes_alike::<u16>(&bytes);
            decodes_alike::<bool>(&bytes);
            decodes_alike::<f32>(&bytes);
            decodes_alike::<Vec<u32>>(&bytes);
            decodes_alike::<Vec<Vec<i8>>>(&bytes);
            decodes_alike::<(u8, i64, bool)>(&bytes);
            decodes_alike::<[i16; 3]>(&bytes);
            decodes_alike::<Option<i64>>(&bytes);
            decodes_alike::<Option<Vec<Option<i8>>>>(&bytes);
            decodes_alike::<()>(&bytes);
            decodes_alike::<Meters>(&bytes);
            decodes_alike::<String>(&bytes);
            decodes_alike::<char>(&bytes);
            decodes_alike::<(String, u8)>(&bytes);
            decodes_alike::<Point>(&bytes);
        }
    }

    #[test]
    fn options_units_and_newtypes_of_numbers_decode_by_hand() {
        assert!(decodes_alike::<Option<i64>>(&rmp_bytes(&Some(-7i64))));
        assert!(decodes_alike::<Option<i64>>(&rmp_bytes(&None::<i64>)));
        assert!(decodes_alike::<Option<Option<u8>>>(&rmp_bytes(&Some(
            Some(3u8)
        ))));
        assert!(decodes_alike::<Vec<Option<f64>>>(&rmp_bytes(&[
            Some(1.5),
            None
        ])));
        assert!(decodes_alike::<()>(&rmp_bytes(&())));
        assert!(decodes_alike::<Meters>(&rmp_bytes(&Meters(2.0))));
        assert!(decodes_alike::<(Meters, ())>(&rmp_bytes(&(
            Meters(2.0),
            ()
        ))));
        assert!(!decodes_alike::<()>(&rmp_bytes(&1u8)));
        // `rmp_serde`'s extension type is its own.
        assert_eq!(rmp_serde::MSGPACK_EXT_STRUCT_NAME, "_ExtStruct");
        let ext = Ext((5, serde_bytes::ByteBuf::from(vec![1, 2, 3, 4])));
        let bytes = rmp_bytes(&ext);
        assert_eq!(bytes[0], 0xd6, "a fixext 4");
        assert!(!decodes_alike::<Ext>(&bytes));
        assert_eq!(rmp_serde::from_slice::<Ext>(&bytes).unwrap(), ext);
    }

    #[test]
    fn strings_of_every_length_encoding_decode_by_hand() {
        // A fixstr, a `str 8`, a `str 16` and a `str 32`.
        for len in [0, 31, 32, 255, 256, 65535, 65536] {
            let text: String = "é".repeat(len / 2) + &"x".repeat(len % 2);
            assert_eq!(text.len(), len);
            assert!(decodes_alike::<String>(&rmp_bytes(&text)), "{len} bytes");
        }
    }

    #[test]
    fn arrays_of_every_length_encoding_decode_by_hand() {
        // A fixarray, an `array 16` and an `array 32`.
        for len in [15, 16, 65535, 65536] {
            let list: Vec<i64> = (0..len).map(|i| i * 7919 - 300_000).collect();
            let bytes = rmp_bytes(&list);
            assert!(decodes_alike::<Vec<i64>>(&bytes), "{len} numbers");
        }
    }

    #[test]
    fn what_is_not_a_number_or_a_sequence_of_them_is_left_to_rmp_serde() {
        let point = Point {
            x: 1,
            y: None,
            tags: vec!["a".into()],
        };
        assert!(!decodes_alike::<Point>(&rmp_bytes(&point)));
        assert!(!decodes_alike::<Shape>(&rmp_bytes(&Shape::Circle(3))));
        assert!(!decodes_alike::<BTreeMap<i64, i64>>(&rmp_bytes(
            &BTreeMap::from([(1, 2)])
        )));
        // A string of invalid UTF-8, which `rmp_serde` refuses too.
        let invalid = [0xa2, 0xff, 0xfe];
        assert!(!decodes_alike::<String>(&invalid));
        assert!(rmp_serde::from_slice::<String>(&invalid).is_err());
        // Two characters are no `char`.
        assert!(!decodes_alike::<char>(&rmp_bytes("ab")));
        // An array with fewer elements than the tuple reads, or more.
        assert!(!decodes_alike::<(i64, i64)>(&rmp_bytes(&[1i64])));
        assert!(!decodes_alike::<(i64, i64)>(&rmp_bytes(&[1i64, 2, 3])));
        // A float is no integer, nor the reverse for `rmp_serde`... but
        // serde's `f64` takes an integer, and so does the hand path.
        assert!(!decodes_alike::<i64>(&rmp_bytes(&1.0f64)));
        assert!(decodes_alike::<f64>(&rmp_bytes(&7i64)));
        // Nested deeper than the hand path goes.
        let mut deep = vec![0x91u8; MAX_DEPTH as usize + 1];
        deep.push(0x01);
        type Deep = Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<i64>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>;
        assert!(!decodes_alike::<Deep>(&deep));
        assert!(rmp_serde::from_slice::<Deep>(&deep).is_ok());
    }
}
