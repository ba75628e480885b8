//! KServe v2 tensor datatypes and the arithmetic on shapes that every layer repeats.

use std::fmt;
use std::str::FromStr;

/// A KServe v2 datatype, as spelled on the wire (`"FP32"`, `"INT64"`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    Bf16,
    F32,
    F64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::U8,
        DataType::U16,
        DataType::U32,
        DataType::U64,
        DataType::I8,
        DataType::I16,
        DataType::I32,
        DataType::I64,
        DataType::F16,
        DataType::Bf16,
        DataType::F32,
        DataType::F64,
        DataType::Bytes,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::U16 => "UINT16",
            DataType::U32 => "UINT32",
            DataType::U64 => "UINT64",
            DataType::I8 => "INT8",
            DataType::I16 => "INT16",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Bytes per element in the raw (little-endian, row-major) encoding; `None` for
    /// BYTES, whose elements are length-prefixed.
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 | DataType::F16 | DataType::Bf16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
            DataType::Bytes => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A datatype name that is not part of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown datatype {0:?}")]
pub struct UnknownDataType(pub String);

impl FromStr for DataType {
    type Err = UnknownDataType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDataType(s.chars().take(32).collect()))
    }
}

/// Why a shape is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("shape has a negative dimension")]
    Negative,
    #[error("shape's element count overflows")]
    Overflow,
    #[error("shape has {0} dimensions, more than the {MAX_RANK} allowed")]
    TooManyDims(usize),
}

/// No real model has more dimensions than this; a longer shape is an attack or a bug.
pub const MAX_RANK: usize = 16;

/// The number of elements a shape holds, refusing negative dimensions and overflow.
pub fn element_count(shape: &[i64]) -> Result<usize, ShapeError> {
    if shape.len() > MAX_RANK {
        return Err(ShapeError::TooManyDims(shape.len()));
    }
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).map_err(|_| ShapeError::Negative)?;
        acc.checked_mul(d).ok_or(ShapeError::Overflow)
    })
}

/// The byte length of a raw tensor of `shape`, for fixed-size datatypes.
pub fn byte_size(dtype: DataType, shape: &[i64]) -> Result<Option<usize>, ShapeError> {
    let n = element_count(shape)?;
    match dtype.element_size() {
        None => Ok(None),
        Some(s) => n.checked_mul(s).map(Some).ok_or(ShapeError::Overflow),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DataType::ALL {
            assert_eq!(d.as_str().parse::<DataType>(), Ok(d));
        }
        assert!("fp32".parse::<DataType>().is_err());
        assert!("FLOAT".parse::<DataType>().is_err());
    }

    #[test]
    fn element_count_refuses_overflow_and_negatives() {
        assert_eq!(element_count(&[1, 3, 224, 224]), Ok(150_528));
        assert_eq!(element_count(&[]), Ok(1));
        assert_eq!(element_count(&[0, 5]), Ok(0));
        assert_eq!(element_count(&[-1, 3]), Err(ShapeError::Negative));
        assert_eq!(
            element_count(&[i64::MAX, i64::MAX]),
            Err(ShapeError::Overflow)
        );
        assert_eq!(
            byte_size(DataType::F64, &[1 << 61]),
            Err(ShapeError::Overflow)
        );
        assert!(matches!(
            element_count(&[1; 17]),
            Err(ShapeError::TooManyDims(17))
        ));
    }
}
