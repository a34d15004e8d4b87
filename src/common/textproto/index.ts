// Protobuf text format (the syntax of Fleetspeak's config files) for protobuf-es messages, with
// errors that point at file:line:column and a lenient mode that skips unknown fields.
export { TextFormatError } from "./error.js";
export { mergeText, type ParseTextOptions, parseText, parseTextFile, type TextPosition } from "./parse.js";
export { type PrintTextOptions, printText } from "./print.js";
