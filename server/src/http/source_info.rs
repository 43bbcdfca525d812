//! Encoded descriptor sets without their comments.
//!
//! `protoc --include_source_info` (which prost-build asks for) puts every
//! comment and source position into `FileDescriptorProto.source_code_info`:
//! five sixths of Tollgate's encoded set, and about 3 MB of the server's
//! heap once decoded into the pool that serves every call. Only the OpenAPI
//! document reads comments, once, from the full set
//! ([`super::openapi`]); the pool the server keeps is decoded without them.
//!
//! Written by hand, at the wire level, rather than by decoding into
//! `prost_types` and encoding again: prost keeps no unknown fields, so
//! that round trip drops the custom options (`(tollgate.v1.policy)`,
//! `google.api.http`) the server is made of. prost-reflect's dynamic
//! messages would keep them, at several milliseconds of start-up.

use prost::{
    DecodeError,
    encoding::{
        DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint, skip_field,
    },
};

/// `FileDescriptorSet.file`.
const SET_FILE: u32 = 1;
/// `FileDescriptorProto.source_code_info`.
const FILE_SOURCE_CODE_INFO: u32 = 9;

/// `set` (an encoded `FileDescriptorSet`) with every file's
/// `source_code_info` left out and every other byte kept as it was.
pub fn without_source_info(set: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(set.len() / 4);
    let mut rest = set;
    while !rest.is_empty() {
        let (start, (tag, wire_type)) = (rest, decode_key(&mut rest)?);
        if tag == SET_FILE && wire_type == WireType::LengthDelimited {
            let file = length_delimited(&mut rest)?;
            let file = without_field(file, FILE_SOURCE_CODE_INFO)?;
            encode_key(SET_FILE, WireType::LengthDelimited, &mut out);
            encode_varint(file.len() as u64, &mut out);
            out.extend_from_slice(&file);
        } else {
            skip_field(wire_type, tag, &mut rest, DecodeContext::default())?;
            out.extend_from_slice(&start[..start.len() - rest.len()]);
        }
    }
    Ok(out)
}

/// The encoded message `message` without its field `field`.
fn without_field(message: &[u8], field: u32) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(message.len());
    let mut rest = message;
    while !rest.is_empty() {
        let start = rest;
        let (tag, wire_type) = decode_key(&mut rest)?;
        skip_field(wire_type, tag, &mut rest, DecodeContext::default())?;
        if tag != field {
            out.extend_from_slice(&start[..start.len() - rest.len()]);
        }
    }
    Ok(out)
}

/// The bytes of a length-delimited field whose key was just read
/// (`skip_field` checks its length against what is left).
fn length_delimited<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let start = *rest;
    skip_field(
        WireType::LengthDelimited,
        SET_FILE,
        rest,
        DecodeContext::default(),
    )?;
    let mut field = &start[..start.len() - rest.len()];
    decode_varint(&mut field)?;
    Ok(field)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_reflect::DescriptorPool;

    use super::*;

    #[test]
    fn comments_go_and_everything_else_stays() {
        let full = tollgate::FILE_DESCRIPTOR_SET;
        let bare = without_source_info(full).unwrap();
        assert!(
            bare.len() * 3 < full.len(),
            "{} of {}",
            bare.len(),
            full.len()
        );

        let decoded = prost_types::FileDescriptorSet::decode(&bare[..]).unwrap();
        let original = prost_types::FileDescriptorSet::decode(full).unwrap();
        assert_eq!(decoded.file.len(), original.file.len());
        assert!(original.file.iter().any(|f| f.source_code_info.is_some()));
        assert!(decoded.file.iter().all(|f| f.source_code_info.is_none()));
        for (mut original, decoded) in original.file.into_iter().zip(decoded.file) {
            original.source_code_info = None;
            assert_eq!(original, decoded);
        }

        // The custom options survive: the policies and HTTP routes read
        // from the bare set are the full set's.
        let pool = DescriptorPool::decode(&bare[..]).unwrap();
        let policies = crate::policy::Policies::from_pool(&pool).unwrap();
        let get = policies
            .get("/tollgate.v1.OrganizationService/GetOrganization")
            .unwrap();
        assert_eq!(get.declared.cost, 1);
        let method = pool
            .get_service_by_name("tollgate.v1.OrganizationService")
            .unwrap()
            .methods()
            .find(|m| m.name() == "GetOrganization")
            .unwrap();
        let http = pool.get_extension_by_name("google.api.http").unwrap();
        assert!(method.options().has_extension(&http));
    }

    #[test]
    fn a_broken_set_is_an_error() {
        // A file longer than the set, and a length cut short.
        assert!(without_source_info(&[0x0a, 0x05, 0x01]).is_err());
        assert!(without_source_info(&[0x0a, 0xff]).is_err());
    }
}
