//! A transfer's shape from the links that carry it: the chunk size its
//! manifest fixes and the gzip level its sender compresses at. Read by the
//! client (uploads) and the agent (downloads) alike.

use crate::link::{message_payload, LinkHandle, WHOLE_RECORD_OVERHEAD};
use crate::protocol::CHUNK_FRAME_OVERHEAD;

/// The chunk size of a transfer over `links`: the largest that,
/// incompressible, fits one message of a link and takes that link at most
/// [`CHUNK_SECONDS`] at its pace, over all links; at least
/// [`MIN_CHUNK_ON_TEXT`], at most 1 MiB. A smaller link carries it in
/// pieces (one lost message costs one message: [`crate::link`]), so a
/// document channel is not used at a text channel's chunk size beside it,
/// and gzip sees enough at a time to find the repeats in log text even on
/// a text channel alone. The pace bound keeps a paced transfer in enough
/// chunks to stripe over several links, end on all of them together, and
/// lose little to a restart (a run re-sends the chunk it was in).
pub(crate) fn chunk_size_for<'a>(links: impl IntoIterator<Item = &'a LinkHandle>) -> u32 {
    let caps: Vec<_> = links.into_iter().map(LinkHandle::capabilities).collect();
    chunk_size_over(caps.iter())
}

/// Compression wants this much at a time: log text in 64 KiB chunks at
/// gzip level 6 is 19.7% of its size, in a text message's 3 KB 33.3%.
pub(crate) const MIN_CHUNK_ON_TEXT: usize = 64 * 1024;

/// The longest a chunk should take on a paced link.
const CHUNK_SECONDS: u64 = 4;

fn chunk_size_over<'a>(links: impl Iterator<Item = &'a crate::transport::Capabilities>) -> u32 {
    let fit = links
        .map(|caps| {
            let fit =
                message_payload(caps).saturating_sub(WHOLE_RECORD_OVERHEAD + CHUNK_FRAME_OVERHEAD);
            pace_per_second(caps).map_or(fit, |p| fit.min((p * CHUNK_SECONDS) as usize))
        })
        .max()
        .unwrap_or(1024 * 1024);
    fit.clamp(MIN_CHUNK_ON_TEXT, 1024 * 1024) as u32
}

/// The bytes a second a link carries at most: None when it is not paced.
fn pace_per_second(caps: &crate::transport::Capabilities) -> Option<u64> {
    let by_messages = caps
        .messages_per_minute
        .map(|m| u64::from(m) * caps.payload_bytes() as u64);
    let per_minute = match (by_messages, caps.bytes_per_minute) {
        (Some(m), Some(b)) => Some(m.min(b)),
        (m, b) => m.or(b),
    };
    per_minute.map(|b| b / 60)
}

/// Links carrying at most this much a second together are slower than
/// gzip at level 6 on one core (zlib-rs: some 60 MB/s on log text): the
/// channel, not the CPU, is the bottleneck.
const SLOW_LINKS: u64 = 4_000_000;

/// The gzip level a sender over `links` compresses at: 6 when every link
/// is paced and together they carry at most [`SLOW_LINKS`] a second (on
/// log text in 1 MiB chunks 19.9% of the bytes instead of 24.6%, in 3 KB
/// chunks 33.3% instead of 35.5%), else 1 (a fast link would wait for the
/// CPU).
pub(crate) fn gzip_level_for<'a>(links: impl IntoIterator<Item = &'a LinkHandle>) -> u32 {
    let caps: Vec<_> = links.into_iter().map(LinkHandle::capabilities).collect();
    gzip_level_over(caps.iter())
}

fn gzip_level_over<'a>(mut links: impl Iterator<Item = &'a crate::transport::Capabilities>) -> u32 {
    let pace = links.try_fold(0u64, |sum, caps| {
        caps.messages_per_minute?;
        Some(sum + pace_per_second(caps)?)
    });
    match pace {
        Some(bytes_per_sec) if bytes_per_sec <= SLOW_LINKS => 6,
        _ => 1,
    }
}

/// Whether every one of `links` is paced (a channel of so many messages
/// or bytes a minute): then the channel, not the CPU, is the bottleneck,
/// and reading a file again to save bytes on the wire pays.
pub(crate) fn paced<'a>(links: impl IntoIterator<Item = &'a LinkHandle>) -> bool {
    links
        .into_iter()
        .all(|l| pace_per_second(&l.capabilities()).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Profile;

    #[test]
    fn gzip_works_harder_only_where_the_channel_is_the_bottleneck() {
        let level = |profiles: &[Profile]| {
            let caps: Vec<_> = profiles.iter().map(|p| p.capabilities()).collect();
            gzip_level_over(caps.iter())
        };
        assert_eq!(level(&[Profile::TelegramText]), 6);
        assert_eq!(level(&[Profile::WhatsappDoc, Profile::TelegramText]), 6);
        assert_eq!(level(&[Profile::Shipper]), 1);
        assert_eq!(level(&[Profile::Unlimited]), 1);
        assert_eq!(level(&[Profile::TelegramText, Profile::Unlimited]), 1);
    }

    #[test]
    fn chunks_fit_the_largest_link_and_a_few_seconds_of_its_pace() {
        use crate::transport::Capabilities;
        let size = |caps: &[Capabilities]| chunk_size_over(caps.iter()) as usize;
        let text = Profile::TelegramText.capabilities();
        let doc = Profile::WhatsappDoc.capabilities();
        let unlimited = Profile::Unlimited.capabilities();
        // A text channel alone: what compression wants, not one message.
        assert_eq!(size(std::slice::from_ref(&text)), MIN_CHUNK_ON_TEXT);
        // Unpaced: 1 MiB, whatever sits beside it.
        assert_eq!(size(&[text.clone(), unlimited.clone()]), 1024 * 1024);
        // A document channel beside a text one: sized for the document
        // channel, within its pace.
        let alone = size(std::slice::from_ref(&doc));
        assert_eq!(size(&[text.clone(), doc.clone()]), alone);
        assert!(alone > MIN_CHUNK_ON_TEXT, "{alone}");
        // A slow document channel: a few seconds of its pace, no more.
        let slow = Capabilities {
            bytes_per_minute: Some(1_200_000),
            ..Profile::Shipper.capabilities()
        };
        assert_eq!(size(std::slice::from_ref(&slow)), 80_000);
        let very_slow = Capabilities {
            bytes_per_minute: Some(60_000),
            ..slow.clone()
        };
        assert_eq!(size(&[very_slow]), MIN_CHUNK_ON_TEXT);
    }
}
