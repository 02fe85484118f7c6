//! `owlet chat`: a conversation at the terminal.
//!
//! On a terminal the line is read with rustyline (editing, in-session history with the arrow
//! keys; nothing is written to disk); from a pipe or file, plain lines. Ctrl-C during an answer
//! stops the answer and keeps the conversation (the session's cancel flag, checked before each
//! token); Ctrl-C at the prompt drops the line, and a second one at an empty prompt, Ctrl-D or
//! `/quit` leaves. A line that is not UTF-8 is refused and the conversation goes on.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use owlet::session::{Media, StopReason};
use rustyline::config::Behavior;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{
    Cmd, ConditionalEventHandler, Config, Editor, Event, EventContext, EventHandler, KeyEvent,
    RepeatCount,
};

use crate::sys;
use owlet::image::ExifOrientation;

use crate::{
    aspect, gen_options, load_image, load_model_cached, session, FrameArgs, GenArgs, ModelArgs, Res,
};

const COMMANDS: &str = "commands:
  /image PATH   attach an image (JPEG or PNG) to the next message
  /video PATH   attach a video (MP4/H.264, GIF or a folder of frames) to the next message
  /reset        forget the conversation
  /quit         leave (also /exit, Ctrl-D, or Ctrl-C twice at an empty prompt)
  /help         this list
Ctrl-C stops an answer. To send a message that starts with /, type // instead.";

const IMAGE_USAGE: &str = "usage: /image PATH (a JPEG or PNG file, attached to the next message)";
const VIDEO_USAGE: &str =
    "usage: /video PATH (MP4/H.264, animated GIF or a folder of frames, attached to the next message)";

pub fn chat(
    model: &ModelArgs,
    gen: &GenArgs,
    image_mode: &Option<String>,
    exif: ExifOrientation,
    frames: &FrameArgs,
) -> Res<()> {
    let opts = gen_options(gen)?;
    let mode = aspect(image_mode)?;
    let m = load_model_cached(&model.model, &model.packed_cache)?;
    let mut s = session(&m, model)?;
    sys::cancel_on_sigint(&s.cancel_handle());
    let mut input = Input::new();
    let mut pending = Vec::new();
    eprintln!(
        "owlet chat: type a message; /image PATH attaches an image; /help lists the commands"
    );
    // Whether the last thing typed was a Ctrl-C at an empty prompt: a second one leaves.
    let mut quit_armed = false;
    loop {
        let line = match input.read("> ")? {
            Line::Eof => return Ok(()),
            Line::Interrupted { empty: true } if quit_armed => return Ok(()),
            Line::Interrupted { empty } => {
                quit_armed = empty;
                if empty {
                    eprintln!("(Ctrl-C again or Ctrl-D to quit)");
                }
                continue;
            }
            Line::NotUtf8 => {
                quit_armed = false;
                eprintln!(
                    "(that line is not UTF-8 text; it was dropped, the conversation goes on)"
                );
                continue;
            }
            Line::Text(l) => {
                quit_armed = false;
                l
            }
        };
        let text = match parse(line.trim()) {
            Command::Empty => continue,
            Command::Quit => return Ok(()),
            Command::Help => {
                eprintln!("{COMMANDS}");
                continue;
            }
            Command::Unknown(name) => {
                eprintln!("unknown command /{name}; {COMMANDS}");
                continue;
            }
            Command::Reset => {
                s.reset();
                pending.clear();
                eprintln!("(conversation cleared)");
                continue;
            }
            Command::Image("") => {
                eprintln!("{IMAGE_USAGE}");
                continue;
            }
            Command::Image(path) => {
                match load_image(Path::new(path), exif) {
                    Ok(img) => {
                        pending.push(Media::Image(img));
                        eprintln!("(image attached to the next message)");
                    }
                    Err(e) => eprintln!("error: {e}"),
                }
                continue;
            }
            Command::Video("") => {
                eprintln!("{VIDEO_USAGE}");
                continue;
            }
            Command::Video(path) => {
                match crate::video::load(Path::new(path), &frames.sampling(), exif) {
                    Ok((_, idx, f)) => {
                        pending.push(Media::Video(f));
                        eprintln!(
                            "(video attached to the next message: {} frame{})",
                            idx.len(),
                            if idx.len() == 1 { "" } else { "s" }
                        );
                    }
                    Err(e) => eprintln!("error: {e}"),
                }
                continue;
            }
            Command::Message(t) => t,
        };
        let stdout = io::stdout();
        let mut out = stdout.lock();
        let r = s.chat_media(text, &pending, mode, &opts, &mut |_, piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
            true
        });
        pending.clear();
        let _ = writeln!(out);
        drop(out);
        match r {
            Ok(g) if g.stop == StopReason::Cancelled => {
                eprintln!("(answer stopped; the conversation goes on)")
            }
            Ok(g) if g.stop == StopReason::ContextFull => {
                eprintln!("(the context is full; /reset starts a new conversation)")
            }
            Ok(_) => {}
            Err(e) => {
                // A model file changed under us makes every later turn fail too: leave.
                m.check_file().map_err(|e| e.to_string())?;
                eprintln!("error: {e}");
            }
        }
    }
}

/// What a typed line asks for.
#[derive(Debug, PartialEq)]
enum Command<'a> {
    Empty,
    Quit,
    Reset,
    Help,
    /// `/image` and its argument (empty when none was given), surrounding quotes removed.
    Image(&'a str),
    /// `/video` and its argument, likewise.
    Video(&'a str),
    /// A `/word` that is no command.
    Unknown(&'a str),
    /// Text for the model (`//x` sends `/x`).
    Message(&'a str),
}

fn parse(line: &str) -> Command<'_> {
    if line.is_empty() {
        return Command::Empty;
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Command::Message(line);
    };
    if rest.starts_with('/') {
        return Command::Message(rest);
    }
    let (name, arg) = rest
        .split_once(char::is_whitespace)
        .map_or((rest, ""), |(n, a)| (n, a.trim()));
    match name {
        "quit" | "exit" => Command::Quit,
        "reset" => Command::Reset,
        "help" | "?" => Command::Help,
        "image" => Command::Image(unquote(arg)),
        "video" => Command::Video(unquote(arg)),
        _ => Command::Unknown(name),
    }
}

/// A path without the quotes a terminal adds when a file is dropped on it.
fn unquote(s: &str) -> &str {
    for q in ['\'', '"'] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// What the user did at the prompt.
enum Line {
    Text(String),
    /// A line that is not UTF-8 (dropped).
    NotUtf8,
    /// Ctrl-C at the prompt; `empty` when nothing had been typed.
    Interrupted {
        empty: bool,
    },
    /// Ctrl-D, or the end of the input.
    Eof,
}

/// Where lines come from.
enum Input {
    /// A terminal, through the line editor; the flag tells whether the line was empty when
    /// Ctrl-C was pressed.
    Editor(Box<Editor<(), DefaultHistory>>, Arc<AtomicBool>),
    /// A pipe or a file (or a terminal the editor cannot drive): plain lines.
    Plain,
}

impl Input {
    fn new() -> Input {
        if !io::stdin().is_terminal() {
            return Input::Plain;
        }
        // The prompt and the echo go to the terminal itself, so that `owlet chat > file`
        // keeps only the answers in the file.
        let config = Config::builder()
            .behavior(Behavior::PreferTerm)
            .auto_add_history(true)
            .build();
        let Ok(mut ed) = Editor::with_config(config) else {
            return Input::Plain;
        };
        let empty = Arc::new(AtomicBool::new(false));
        ed.bind_sequence(
            KeyEvent::ctrl('C'),
            EventHandler::Conditional(Box::new(CtrlC(Arc::clone(&empty)))),
        );
        Input::Editor(Box::new(ed), empty)
    }

    fn read(&mut self, prompt: &str) -> Res<Line> {
        match self {
            Input::Editor(ed, empty) => match ed.readline(prompt) {
                Ok(l) => Ok(Line::Text(l)),
                Err(ReadlineError::Interrupted) => Ok(Line::Interrupted {
                    empty: empty.load(Ordering::Relaxed),
                }),
                Err(ReadlineError::Eof) => Ok(Line::Eof),
                Err(ReadlineError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    // The editor stopped at the first bad byte: drop the rest of the line.
                    sys::discard_typed_input();
                    Ok(Line::NotUtf8)
                }
                Err(e) => Err(format!("reading the terminal: {e}")),
            },
            Input::Plain => {
                // A script piped in gets no prompts between the answers.
                let tty = io::stdin().is_terminal();
                if tty {
                    eprint!("{prompt}");
                }
                let mut buf = Vec::new();
                sys::sigint_quits(true);
                let n = io::stdin().lock().read_until(b'\n', &mut buf);
                sys::sigint_quits(false);
                if n.map_err(|e| format!("reading stdin: {e}"))? == 0 {
                    if tty {
                        eprintln!();
                    }
                    return Ok(Line::Eof);
                }
                while buf.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                    buf.pop();
                }
                Ok(String::from_utf8(buf).map_or(Line::NotUtf8, Line::Text))
            }
        }
    }
}

/// Ctrl-C in the editor: notes whether the line was empty, then interrupts as usual.
struct CtrlC(Arc<AtomicBool>);

impl ConditionalEventHandler for CtrlC {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        self.0.store(ctx.line().is_empty(), Ordering::Relaxed);
        Some(Cmd::Interrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_recognised_and_the_rest_is_text() {
        assert_eq!(parse(""), Command::Empty);
        assert_eq!(parse("hello"), Command::Message("hello"));
        assert_eq!(parse("/quit"), Command::Quit);
        assert_eq!(parse("/exit now"), Command::Quit);
        assert_eq!(parse("/image"), Command::Image(""));
        assert_eq!(parse("/image  a b.png"), Command::Image("a b.png"));
        assert_eq!(
            parse("/image '/tmp/x y.jpg'"),
            Command::Image("/tmp/x y.jpg")
        );
        assert_eq!(parse("/imagefoo.png"), Command::Unknown("imagefoo.png"));
        assert_eq!(parse("/usr/bin"), Command::Unknown("usr/bin"));
        assert_eq!(parse("//usr/bin"), Command::Message("/usr/bin"));
    }
}
