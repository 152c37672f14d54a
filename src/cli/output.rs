//! The CLI's own output. Only commands other than `serve` print: for `serve`, stdout is the
//! protocol channel.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub fn line(text: &str) {
    println!("{text}");
}

pub fn error(text: &str) {
    eprintln!("tierls: {text}");
}
