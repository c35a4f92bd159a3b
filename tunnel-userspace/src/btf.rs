//! Just enough of the kernel's BTF to find one field of `struct sk_buff`:
//! the data plane reads `ip_summed` (is a checksum still pending offload?),
//! whose place changes between kernel builds.

/// Kinds of BTF types (`BTF_KIND_*`) this reader needs to tell apart.
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Type<'a> {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// For typedefs and modifiers: the type they name.
    target: u32,
    /// Struct and union members: (name_off, type, offset word).
    members: &'a [u8],
}

/// The BTF types of a blob, by id (id 0 is void).
struct Btf<'a> {
    types: Vec<Type<'a>>,
    strings: &'a [u8],
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    fn parse(blob: &'a [u8]) -> Option<Self> {
        if blob.get(..2)? != [0x9f, 0xeb] {
            return None;
        }
        let hdr_len = u32_at(blob, 4)? as usize;
        let (type_off, type_len) = (u32_at(blob, 8)? as usize, u32_at(blob, 12)? as usize);
        let (str_off, str_len) = (u32_at(blob, 16)? as usize, u32_at(blob, 20)? as usize);
        let types = blob.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
        let strings = blob.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
        let mut out = vec![Type {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            target: 0,
            members: &[],
        }];
        let mut at = 0;
        while at + 12 <= types.len() {
            let info = u32_at(types, at + 4)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => 0,
            };
            let members = if kind == KIND_STRUCT || kind == KIND_UNION {
                types.get(at + 12..at + 12 + extra)?
            } else {
                &[]
            };
            out.push(Type {
                name_off: u32_at(types, at)?,
                kind,
                kind_flag: info >> 31 != 0,
                target: u32_at(types, at + 8)?,
                members,
            });
            at += 12 + extra;
        }
        Some(Self {
            types: out,
            strings,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// The struct or union behind `id`, through typedefs and qualifiers.
    fn aggregate(&self, mut id: u32) -> Option<&Type<'a>> {
        for _ in 0..16 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_STRUCT | KIND_UNION => return Some(ty),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.target
                }
                _ => return None,
            }
        }
        None
    }

    /// Bit offset of member `field` in `ty`, looking into anonymous
    /// structs and unions.
    fn bit_offset(&self, ty: &Type<'a>, field: &[u8], depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for m in ty.members.chunks_exact(12) {
            let (name_off, member_type, offset) = (u32_at(m, 0)?, u32_at(m, 4)?, u32_at(m, 8)?);
            let bits = if ty.kind_flag {
                offset & 0xff_ffff
            } else {
                offset
            };
            if name_off == 0 {
                if let Some(inner) = self.aggregate(member_type) {
                    if let Some(found) = self.bit_offset(inner, field, depth + 1) {
                        return Some(bits + found);
                    }
                }
            } else if self.name(name_off) == field {
                return Some(bits);
            }
        }
        None
    }
}

/// (byte offset, bit within that byte) of `sk_buff::ip_summed` in the
/// running kernel, from /sys/kernel/btf/vmlinux; None when unknown.
pub fn skb_ip_summed() -> Option<(u32, u32)> {
    let blob = std::fs::read("/sys/kernel/btf/vmlinux").ok()?;
    skb_ip_summed_in(&blob)
}

fn skb_ip_summed_in(blob: &[u8]) -> Option<(u32, u32)> {
    let btf = Btf::parse(blob)?;
    let skb = btf
        .types
        .iter()
        .find(|t| t.kind == KIND_STRUCT && btf.name(t.name_off) == b"sk_buff")?;
    let bits = btf.bit_offset(skb, b"ip_summed", 0)?;
    Some((bits / 8, bits % 8))
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_ip_summed_in_the_running_kernel() {
        let Ok(blob) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            panic!("/sys/kernel/btf/vmlinux is needed (CONFIG_DEBUG_INFO_BTF)");
        };
        let (byte, bit) = super::skb_ip_summed_in(&blob).expect("ip_summed found");
        // A two-bit field inside the first cache lines of sk_buff.
        assert!((64..512).contains(&byte), "{byte}");
        assert!(bit <= 6, "{bit}");
    }
}
